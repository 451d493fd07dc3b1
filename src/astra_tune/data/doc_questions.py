"""Questions from documentation: passages, the facts they state, questions parsed from replies.

A docs folder trains poorly as it is: a text record teaches the style of the pages, and
an FAQ heading asks for a fact in one phrasing only. Each passage is cut into its facts
(the sentences, list items and commands that state a number, name or term), and a model
is asked, per fact, for the question a user would ask to learn it; the fact itself is the
answer, so every pair is grounded by construction. One small request per fact is a task
even the embedded 135M model can do, where "write 6 Q/A pairs about this passage" was
not (0 of 30 replies usable on Ollama's FAQ).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PASSAGE_WORDS = 180  # long enough for a few facts, short enough that each gets asked
# An FAQ answer this long states several facts, and its heading asks for them in one
# phrasing only; shorter answers are one fact, which paraphrasing covers.
ANSWER_PASSAGE_WORDS = 40
REJECT_NO_QUESTION = "no question in the reply"
_HEADING = re.compile(r"^#{1,6}\s")


@dataclass(frozen=True)
class Passage:
    """A run of paragraphs of one text record, under its nearest heading."""

    text: str
    source: str


def passages(text: str, source: str, max_words: int = PASSAGE_WORDS) -> list[Passage]:
    """Split a document's text at paragraph boundaries into passages of about max_words.

    A heading starts a new passage and is kept at its top, so each passage says what it
    is about; a paragraph longer than max_words stays whole rather than being cut mid-way.
    """
    out: list[Passage] = []
    current: list[str] = []
    words = 0

    def flush() -> None:
        nonlocal current, words
        body = "\n\n".join(current).strip()
        if body and not all(_HEADING.match(part) for part in current):
            out.append(Passage(body, source))
        current, words = [], 0

    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        size = len(paragraph.split())
        if _HEADING.match(paragraph) or (current and words + size > max_words):
            flush()
        current.append(paragraph)
        words += size
    flush()
    return out


def answer_passages(question: str, answer: str, source: str) -> list[Passage]:
    """A long FAQ answer as passages under its question (none for a short answer).

    A docs folder made of FAQ pages has little text outside its question sections, yet each
    answer there holds several facts (a default, a variable, a command); asking for them one
    by one is what turns "set `OLLAMA_...`" into the right variable and value.
    """
    if len(answer.split()) < ANSWER_PASSAGE_WORDS:
        return []
    return passages(f"## {question.strip()}\n\n{answer.strip()}", source)


@dataclass(frozen=True)
class Fact:
    """One statement of a passage worth a question, with the heading it sits under."""

    heading: str
    text: str


MAX_FACT_WORDS = 80  # longer units are prose, not one fact
# A sentence ends at . ! or ? before a capital, unless it is an abbreviation like "e.g.".
_SENTENCE_END = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<=[.!?])\s+(?=[A-Z`\"(])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,2}[.)])\s+")
_MARKUP_ONLY = re.compile(r"^\s*</?[A-Za-z][^>]*>\s*$")  # <Note>, </Info> and the like


def facts_of(passage: str, heading: str = "") -> list[Fact]:
    """The statements of `passage` that hold a key fact: sentences, list items, and a
    sentence ending in ':' together with the code block it introduces. `heading` is the
    one in force where the passage starts (a passage may continue a section)."""
    from astra_tune.evaluate.facts import key_facts

    units: list[str] = []
    for block in re.split(r"\n\s*\n", passage.strip()):
        block = block.strip()
        if not block or _MARKUP_ONLY.match(block):
            continue
        if _HEADING.match(block):
            heading = block.lstrip("#").strip()
            continue
        if block.startswith("```") or block.startswith("    "):
            if units and units[-1].rstrip().endswith(":"):
                units[-1] = f"{units[-1]}\n\n{block}"  # the command the sentence announces
            continue
        lines = [line for line in block.splitlines() if not _MARKUP_ONLY.match(line)]
        if lines and all(_LIST_ITEM.match(line) for line in lines):
            units += [_LIST_ITEM.sub("", line).strip() for line in lines]
        else:
            units += _SENTENCE_END.split(" ".join(line.strip() for line in lines))
    return [
        Fact(heading, unit.strip())
        for unit in units
        if unit.strip() and len(unit.split()) <= MAX_FACT_WORDS and key_facts(unit)
    ]


# "Question: ", "1. ", "**Q:** " (markdown emphasis around the label).
_QUESTION_LABEL = re.compile(
    r"^\s*(?:\d{1,2}[.)]\s*)?[*_]*(?:q(?:uestion)?\s*\d*)?[*_]*\s*[:.]?[*_]*\s*", re.IGNORECASE
)


# "A user might ask: ", "Here is a user's question: ", "User: ": a lead-in to drop.
_LEAD_IN = re.compile(r"^[^?:]{0,60}:\s+(?=[\"“]?[A-Z])")


def parse_question(reply: str) -> str | None:
    """The question of a reply: its first line that ends in '?', labels, lead-ins and
    quotes removed."""
    for line in reply.splitlines():
        text = _QUESTION_LABEL.sub("", line.strip(), count=1).strip()
        text = _LEAD_IN.sub("", text, count=1).strip().strip('"“”').strip()
        if text.endswith("?"):
            return text
    return None


def gives_away(question: str, answer: str) -> bool:
    """True when the question already states every key fact of the answer."""
    from astra_tune.evaluate.facts import key_facts

    return not key_facts(answer, question)


# Words too plain to show that a question is about a fact.
_PLAIN = frozenset(
    [
        "about",
        "after",
        "also",
        "been",
        "before",
        "being",
        "could",
        "does",
        "doing",
        "from",
        "have",
        "here",
        "into",
        "just",
        "like",
        "make",
        "more",
        "most",
        "much",
        "need",
        "only",
        "other",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "used",
        "using",
        "very",
        "want",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
    ]
)
_CONTENT_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,}")
COMMON_FACT_SHARE = 0.2  # a word in this share of a docs folder's facts is its topic


def content_words(text: str) -> set[str]:
    """Lower-cased words of 4+ letters that carry meaning, a plural 's' removed."""
    words = {m.group().lower() for m in _CONTENT_WORD.finditer(text)}
    return {w[:-1] if w.endswith("s") and len(w) > 4 else w for w in words} - _PLAIN


def common_words(facts: list[Fact]) -> frozenset[str]:
    """Words in many of the facts (the product's name): sharing one proves nothing."""
    counts: dict[str, int] = {}
    for fact in facts:
        for word in content_words(fact.text):
            counts[word] = counts.get(word, 0) + 1
    least = max(2.0, COMMON_FACT_SHARE * len(facts))
    return frozenset(w for w, n in counts.items() if n >= least)


def off_topic(question: str, fact: str, common: frozenset[str] = frozenset()) -> bool:
    """True when the question shares no meaningful word with the fact it should ask for:
    a small model often writes a fluent question about something else entirely."""
    return not (content_words(question) & content_words(fact)) - common
