"""Docs from the web: a bounded, polite, same-site crawl with a cache on disk.

A URL source (`sources: [https://docs.example.com/faq/]`) is read by following links
from that page, breadth first, to pages under the same host and path prefix, within
depth and page limits, honouring robots.txt (its Crawl-delay too) and waiting between
requests. Every response is cached under $ASTRA_HOME/cache/web, so a rerun reads the
same pages offline. Each page is reduced like a local .html document (`documents.py`):
FAQ headings become chat records, the rest one text record, with the page URL as source.

Written on httpx and the standard library's robots.txt parser rather than a crawling
framework (Scrapy and the like): those bring an event loop and a project layout for a
job that is a queue, a set of seen URLs and a cache here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from astra_tune.atomic import write_text
from astra_tune.data.rows import Row
from astra_tune.errors import DataError
from astra_tune.home import astra_home
from astra_tune.recipe import CrawlConfig

USER_AGENT = "astra-tune-docs-crawler"
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class Page:
    """One fetched URL: where it ended up after redirects, its status and its body."""

    url: str
    final_url: str
    status: int
    content_type: str
    body: str

    @property
    def is_html(self) -> bool:
        return self.status == 200 and self.content_type.startswith(_HTML_TYPES)


@dataclass
class CrawlStats:
    """What a crawl fetched, read from its cache and left out, and why."""

    fetched: int = 0
    cached: int = 0
    pages: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # url -> reason


def crawl_rows(
    start: str, config: CrawlConfig, *, stats: CrawlStats | None = None
) -> Iterator[Row]:
    """The chat and text rows of every page the crawl reaches from `start`."""
    from astra_tune.data.documents import html_to_markdown, markdown_rows

    stats = stats if stats is not None else CrawlStats()
    with _Fetcher(config, stats) as fetcher:
        for page in _walk(start, config, fetcher, stats):
            stats.pages.append(page.final_url)
            yield from markdown_rows(html_to_markdown(page.body), page.final_url)


def in_scope(url: str, start: str) -> bool:
    """Same scheme and host as `start`, and under its directory."""
    target, origin = urlsplit(url), urlsplit(start)
    prefix = origin.path if origin.path.endswith("/") else origin.path.rsplit("/", 1)[0] + "/"
    return (target.scheme, target.netloc) == (origin.scheme, origin.netloc) and (
        target.path or "/"
    ).startswith(prefix)


def links(html: str, base: str) -> list[str]:
    """The http(s) links of a page, absolute, without fragments, in page order."""
    from bs4 import BeautifulSoup

    found: list[str] = []
    for anchor in BeautifulSoup(html, "html.parser").find_all("a", href=True):
        url, _ = urldefrag(urljoin(base, str(anchor["href"]).strip()))
        if urlsplit(url).scheme in ("http", "https") and url not in found:
            found.append(url)
    return found


def _walk(start: str, config: CrawlConfig, fetcher: _Fetcher, stats: CrawlStats) -> Iterator[Page]:
    first = urldefrag(start)[0]
    queue: deque[tuple[str, int]] = deque([(first, 0)])
    seen = {first}
    delivered = 0
    while queue and delivered < config.max_pages:
        url, depth = queue.popleft()
        reason, page = _problem(url, start, fetcher)
        if reason is not None:
            if url == first:
                raise DataError(
                    f"cannot crawl from {url}: {reason}",
                    where=url,
                    fix="check the URL in data.sources (it must be an HTML page)",
                )
            stats.skipped[url] = reason
            continue
        assert page is not None
        delivered += 1
        yield page
        if depth >= config.max_depth:
            continue
        for link in links(page.body, page.final_url):
            if link not in seen and in_scope(link, start):
                seen.add(link)
                queue.append((link, depth + 1))


def _problem(url: str, start: str, fetcher: _Fetcher) -> tuple[str | None, Page | None]:
    """Why `url` gives no page (robots.txt, an error, not HTML, off-site), or its page."""
    if not fetcher.allowed(url):
        return "disallowed by robots.txt", None
    page = fetcher.get(url)
    if page.final_url != url and not in_scope(page.final_url, start):
        return f"redirects off the site to {page.final_url}", None
    if page.status != 200:
        return f"HTTP {page.status}", None
    if not page.is_html:
        return f"not HTML ({page.content_type or 'no content type'})", None
    return None, page


class _Fetcher:
    """GET with a disk cache, robots.txt rules per host and a pause between requests."""

    def __init__(self, config: CrawlConfig, stats: CrawlStats) -> None:
        import httpx

        self.config = config
        self.stats = stats
        self.cache_dir = astra_home() / "cache" / "web"
        self.robots: dict[str, RobotFileParser | None] = {}
        self.last_request = 0.0
        self.client = httpx.Client(
            follow_redirects=True,
            timeout=config.timeout_s,
            headers={"User-Agent": f"{USER_AGENT} (+https://github.com/astra-tune)"},
        )

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        host = f"{parts.scheme}://{parts.netloc}"
        if host not in self.robots:
            robots = self.get(f"{host}/robots.txt")
            if robots.status == 200:
                parser = RobotFileParser()
                parser.parse(robots.body.splitlines())
                self.robots[host] = parser
            else:
                self.robots[host] = None  # no robots.txt: everything is allowed
        parser = self.robots[host]
        return parser is None or parser.can_fetch(USER_AGENT, url)

    def get(self, url: str) -> Page:
        key = hashlib.sha256(url.encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.is_file() and not self.config.refresh:
            self.stats.cached += 1
            return Page(**json.loads(path.read_text(encoding="utf-8")))
        page = self._fetch(url)
        write_text(path, json.dumps(page.__dict__))
        self.stats.fetched += 1
        return page

    def _fetch(self, url: str) -> Page:
        import httpx

        self._pause(url)
        try:
            response = self.client.get(url)
        except httpx.HTTPError as exc:
            raise DataError(
                f"cannot fetch {url}: {exc}",
                where=url,
                fix="check the URL and the network; pages fetched before are cached",
            ) from exc
        finally:
            self.last_request = time.monotonic()
        return Page(
            url=url,
            final_url=urldefrag(str(response.url))[0],
            status=response.status_code,
            content_type=response.headers.get("content-type", "").split(";")[0].strip(),
            body=response.text if response.status_code == 200 else "",
        )

    def _pause(self, url: str) -> None:
        delay = self.config.delay_s
        parts = urlsplit(url)
        parser = self.robots.get(f"{parts.scheme}://{parts.netloc}")
        crawl_delay: Any = parser.crawl_delay(USER_AGENT) if parser is not None else None
        if crawl_delay:
            delay = max(delay, float(crawl_delay))
        wait = self.last_request + delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
