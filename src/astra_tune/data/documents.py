"""Turn documentation (.md, .html, .txt) into records.

A section under a question-like heading ("How do I reset my password?") becomes a chat
record: the heading is the user turn, the section is the answer. Everything else in a
document becomes one text record for continued pre-training. Sections keep their
Markdown, so code blocks and lists survive intact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from astra_tune.data.rows import DOCUMENT_SUFFIXES, Row, label, read_text

QUESTION_WORDS = (
    "how", "what", "why", "when", "where", "who", "which", "can", "could", "does", "do",
    "is", "are", "should", "will", "would", "may", "am i", "is there", "are there",
)  # fmt: skip
_QA_PREFIX = re.compile(r"^\s*(?:q(?:uestion)?\s*[:.)-]\s*)", re.IGNORECASE)
_TXT_QA = re.compile(
    # An answer runs to the next blank line or the next "Q:".
    r"^\s*Q(?:uestion)?\s*[:.]\s*(?P<q>.+?)\s*\n\s*A(?:nswer)?\s*[:.]\s*(?P<a>.+?)"
    r"(?=\n[ \t]*\n|\n\s*Q(?:uestion)?\s*[:.]|\Z)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Section:
    """A heading (may be empty for text before the first heading) and its Markdown body."""

    heading: str
    level: int
    body: str
    line: int


def is_question(heading: str) -> bool:
    """True for FAQ-style headings: ending in '?', or starting with a question word or 'Q:'."""
    text = heading.strip().rstrip(":").strip()
    if not text:
        return False
    if text.endswith("?") or _QA_PREFIX.match(text):
        return True
    lowered = text.lower()
    return any(lowered == w or lowered.startswith(w + " ") for w in QUESTION_WORDS)


def read_documents(directory: Path) -> Iterator[Row]:
    """Every document under `directory` (recursively, sorted), as chat and text rows."""
    for path in sorted(p for p in directory.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES):
        if path.is_file():
            yield from read_document(path)


def read_document(path: Path) -> Iterator[Row]:
    """One document as chat rows (its FAQ sections) and at most one text row (the rest)."""
    suffix = path.suffix.lower()
    text = read_text(path)
    if suffix == ".txt":
        yield from _plain_text(path, text)
        return
    markdown = html_to_markdown(text) if suffix in (".html", ".htm") else text
    yield from markdown_rows(markdown, label(path), line_mark=":")


def markdown_rows(markdown: str, where: str, line_mark: str = "#L") -> Iterator[Row]:
    """A Markdown document as chat rows (its FAQ sections) and at most one text row.

    FAQ rows are located as `where` + `line_mark` + line (file.md:12, or URL#L12 for a
    crawled page); the text row at line 1 of a file, or at the page's URL itself.
    """
    sections = markdown_sections(markdown)
    rest: list[str] = []
    for section in sections:
        body = section.body.strip("\n")
        if section.heading and is_question(section.heading) and body.strip():
            question = _QA_PREFIX.sub("", section.heading).strip()
            yield Row(
                {"messages": [{"role": "user", "content": question},
                              {"role": "assistant", "content": body}]},
                f"{where}{line_mark}{section.line}",
                fixed_format="openai",
            )  # fmt: skip
        else:
            heading = f"{'#' * section.level} {section.heading}\n\n" if section.heading else ""
            if (heading + body).strip():
                rest.append(heading + body)
    if rest:
        whole = f"{where}:1" if line_mark == ":" else where
        yield Row({"text": "\n\n".join(rest)}, whole, fixed_format="text")


def markdown_sections(markdown: str) -> list[Section]:
    """Split Markdown at its headings (any level), using a real parser so that '#' lines
    inside code blocks are not mistaken for headings."""
    from markdown_it import MarkdownIt

    lines = markdown.splitlines()
    tokens = MarkdownIt("commonmark").parse(markdown)
    headings: list[tuple[int, int, int, str]] = []  # start line, end line, level, text
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            inline = tokens[index + 1]
            headings.append((token.map[0], token.map[1], int(token.tag[1]), inline.content))
    sections: list[Section] = []
    if not headings or headings[0][0] > 0:
        end = headings[0][0] if headings else len(lines)
        sections.append(Section("", 0, "\n".join(lines[:end]), 1))
    for number, (start, stop, level, text) in enumerate(headings):
        end = headings[number + 1][0] if number + 1 < len(headings) else len(lines)
        sections.append(Section(text.strip(), level, "\n".join(lines[stop:end]), start + 1))
    return sections


def html_to_markdown(html: str) -> str:
    """Reduce an HTML page to Markdown with its headings, paragraphs, lists and code.

    Written here because we need only structure (headings for FAQ detection, code kept
    verbatim), not a faithful converter; navigation, scripts and styles are dropped.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "header", "noscript", "svg"]):
        tag.decompose()
    blocks: list[str] = []
    root = soup.body or soup
    for element in root.find_all(
        ["h1", "h2", "h3", "h4", "h5", "h6", "p", "pre", "li", "dt", "dd", "blockquote", "summary"]
    ):
        if element.find_parent(["pre", "li", "blockquote"]) and element.name != "li":
            continue  # already part of an enclosing block
        if element.name == "pre":
            blocks.append("```\n" + element.get_text().strip("\n") + "\n```")
            continue
        text = " ".join(element.get_text(" ").split())
        if not text:
            continue
        if element.name[0] == "h":
            blocks.append(f"{'#' * int(element.name[1])} {text}")
        elif element.name in ("dt", "summary"):
            blocks.append(f"### {text}")
        elif element.name == "li":
            blocks.append(f"- {text}")
        elif element.name == "blockquote":
            blocks.append(f"> {text}")
        else:
            blocks.append(text)
    return "\n\n".join(blocks) + "\n"


def _plain_text(path: Path, text: str) -> Iterator[Row]:
    pairs = list(_TXT_QA.finditer(text))
    covered = 0
    rest: list[str] = []
    for match in pairs:
        rest.append(text[covered : match.start()])
        covered = match.end()
        line = text.count("\n", 0, match.start()) + 1
        yield Row(
            {"messages": [{"role": "user", "content": match["q"].strip()},
                          {"role": "assistant", "content": match["a"].strip()}]},
            f"{label(path)}:{line}",
            fixed_format="openai",
        )  # fmt: skip
    rest.append(text[covered:])
    remainder = "\n".join(part.strip("\n") for part in rest if part.strip())
    if remainder.strip():
        yield Row({"text": remainder}, f"{label(path)}:1", fixed_format="text")
