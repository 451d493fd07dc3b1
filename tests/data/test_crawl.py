"""URL sources: a bounded same-site crawl of a docs tree served on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from astra_tune.data.crawl import CrawlStats, crawl_rows, in_scope, links
from astra_tune.errors import DataError
from astra_tune.recipe import CrawlConfig

PAGES = {
    "/robots.txt": ("text/plain", "User-agent: *\nDisallow: /docs/private/\n"),
    "/docs/": (
        "text/html",
        "<html><body><h1>Robot docs</h1><p>Start here.</p>"
        '<a href="faq.html">FAQ</a> <a href="guide.html#setup">Guide</a> '
        '<a href="missing.html">Gone</a> <a href="private/secret.html">Secret</a> '
        '<a href="old.html">Old guide</a> <a href="/blog/post.html">Blog</a> '
        '<a href="http://other.invalid/docs/">Elsewhere</a> <a href="faq.html">FAQ again</a> '
        '<a href="mailto:help@example.com">Mail</a></body></html>',
    ),
    "/docs/faq.html": (
        "text/html",
        "<html><body><h1>FAQ</h1><h2>How do I reset the robot?</h2>"
        "<p>Hold the power button for 12 seconds.</p>"
        '<h2>Is it waterproof?</h2><p>It is rated IP67.</p><a href="deep/one.html">more</a>'
        "</body></html>",
    ),
    "/docs/guide.html": (
        "text/html",
        "<html><body><h1>Guide</h1><p>The dock charges at 65 watts.</p></body></html>",
    ),
    "/docs/new-guide.html": (
        "text/html",
        "<html><body><h1>New guide</h1><p>Firmware 4.2 adds scheduling.</p></body></html>",
    ),
    "/docs/deep/one.html": (
        "text/html",
        '<html><body><p>Depth two.</p><a href="two.html">deeper</a></body></html>',
    ),
    "/docs/deep/two.html": ("text/html", "<html><body><p>Depth three.</p></body></html>"),
    "/docs/private/secret.html": ("text/html", "<html><body><p>secret</p></body></html>"),
    "/blog/post.html": ("text/html", "<html><body><p>not docs</p></body></html>"),
}
REDIRECTS = {"/docs/old.html": "/docs/new-guide.html"}


class _Site(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path in REDIRECTS:
            self.send_response(301)
            self.send_header("Location", REDIRECTS[self.path])
            self.end_headers()
            return
        if self.path not in PAGES:
            self.send_error(404)
            return
        kind, body = PAGES[self.path]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    _Site.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def test_scope_and_links() -> None:
    start = "https://docs.example.com/guide/index.html"
    assert in_scope("https://docs.example.com/guide/faq.html", start)
    assert not in_scope("https://docs.example.com/blog/a.html", start)
    assert not in_scope("http://docs.example.com/guide/faq.html", start)  # other scheme
    assert not in_scope("https://evil.example.com/guide/faq.html", start)
    html = '<a href="a.html#x">a</a><a href="/b">b</a><a href="mailto:x@y">m</a><a href="a.html">'
    assert links(html, start) == [
        "https://docs.example.com/guide/a.html",
        "https://docs.example.com/b",
    ]


def test_crawl_stays_on_site_honours_robots_and_limits_and_reruns_offline(
    site: tuple[str, ThreadingHTTPServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, server = site
    monkeypatch.setenv("ASTRA_HOME", str(tmp_path / "home"))
    config = CrawlConfig(max_depth=2, delay_s=0)
    stats = CrawlStats()
    rows = list(crawl_rows(f"{base}/docs/", config, stats=stats))
    # Depth 2 reaches deep/one.html (docs/ -> faq -> deep/one) but not deep/two.html.
    assert stats.pages == [
        f"{base}/docs/",
        f"{base}/docs/faq.html",
        f"{base}/docs/guide.html",
        f"{base}/docs/new-guide.html",  # the redirect's target, named by its final URL
        f"{base}/docs/deep/one.html",
    ]
    assert stats.skipped == {
        f"{base}/docs/missing.html": "HTTP 404",
        f"{base}/docs/private/secret.html": "disallowed by robots.txt",
    }
    asked = set(_Site.requests)
    assert "/docs/private/secret.html" not in asked  # robots.txt is read before, not after
    assert "/blog/post.html" not in asked  # outside the start directory
    assert "/docs/deep/two.html" not in asked  # past max_depth
    # The FAQ's headings become chat records located at the page URL; the rest is text.
    chats = [r for r in rows if "messages" in r.data]
    assert [m["content"] for m in chats[0].data["messages"]] == [
        "How do I reset the robot?",
        "Hold the power button for 12 seconds.",
    ]
    assert chats[0].location.startswith(f"{base}/docs/faq.html#L")
    texts = {r.location: r.data["text"] for r in rows if "text" in r.data}
    assert "65 watts" in texts[f"{base}/docs/guide.html"]
    assert "Firmware 4.2" in texts[f"{base}/docs/new-guide.html"]
    assert stats.fetched == len(_Site.requests) - 1  # the redirect took two requests

    # A rerun reads the cache: no request reaches the (now stopped) server.
    server.shutdown()
    again = CrawlStats()
    rerun = list(crawl_rows(f"{base}/docs/", config, stats=again))
    assert [(r.location, r.data) for r in rerun] == [(r.location, r.data) for r in rows]
    assert again.fetched == 0
    assert again.cached > 0

    # max_pages bounds the crawl.
    few = CrawlStats()
    list(crawl_rows(f"{base}/docs/", CrawlConfig(max_pages=2, delay_s=0), stats=few))
    assert len(few.pages) == 2


def test_a_start_page_that_fails_is_a_clear_error(
    site: tuple[str, ThreadingHTTPServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = site
    monkeypatch.setenv("ASTRA_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="HTTP 404") as caught:
        list(crawl_rows(f"{base}/docs/nothing.html", CrawlConfig(delay_s=0)))
    assert caught.value.where == f"{base}/docs/nothing.html"


def test_a_url_source_prepares_like_any_other(
    site: tuple[str, ThreadingHTTPServer], tmp_path: Path, tiny_model_dir: Path
) -> None:
    from tests.cli_runner import run_astra

    base, _ = site
    out = tmp_path / "prepared"
    result = run_astra(
        "data", "prepare", f"{base}/docs/", "-o", str(out), "--model", str(tiny_model_dir),
        "--val", "0", "--test", "0", env={"ASTRA_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    import json

    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    sources = {r["source"] for r in records}
    assert f"{base}/docs/guide.html" in sources
    assert any(s.startswith(f"{base}/docs/faq.html#L") for s in sources)
    report = json.loads((out / "report.json").read_text())
    crawl = report["sources"][0]["crawl"]
    assert crawl["skipped"][f"{base}/docs/missing.html"] == "HTTP 404"
