"""Question/answer pairs from documentation passages: splitting, parsing, grounding checks.

A docs folder trains poorly as it is: a text record teaches the style of the pages, and
an FAQ heading asks for a fact in one phrasing only. Asking a model for one pair per fact
of each passage turns every fact into a question of its own; a pair is kept only when it
is grounded, i.e. every number, name and term its answer states is in the passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PASSAGE_WORDS = 180  # long enough for a few facts, short enough that each gets asked
# An FAQ answer this long states several facts, and its heading asks for them in one
# phrasing only; shorter answers are one fact, which paraphrasing covers.
ANSWER_PASSAGE_WORDS = 40
REJECT_UNGROUNDED = "answer states a term the passage lacks"
REJECT_NO_PAIR = "not a question/answer pair"
# "Q: ...", "1. Question 1: ...", "**A:** ..." (markdown emphasis around the label).
_PAIR_LINE = re.compile(
    r"^\s*(?:\d{1,2}[.)]\s*)?[*_]*(Q|A)(?:uestion|nswer)?\s*\d*[*_]*\s*[:.][*_]*\s*", re.IGNORECASE
)
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


def parse_pairs(reply: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a reply written as 'Q: ...' / 'A: ...' lines."""
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    answer: list[str] = []
    for line in reply.splitlines():
        match = _PAIR_LINE.match(line)
        if match and match.group(1).upper() == "Q":
            if question is not None and answer:
                pairs.append((question, " ".join(answer)))
            question, answer = line[match.end() :].strip(), []
        elif match and question is not None:
            answer = [line[match.end() :].strip()]
        elif question is not None and answer and line.strip():
            answer.append(line.strip())  # an answer that runs over several lines
    if question is not None and answer:
        pairs.append((question, " ".join(answer)))
    return [(q.strip(), a.strip()) for q, a in pairs if q.strip() and a.strip()]


def grounding_problem(passage: str, question: str, answer: str) -> str | None:
    """Why a generated pair is not grounded in `passage`, or None when it is."""
    from astra_tune.evaluate.facts import check_answer, numbers_in

    if not numbers_in(f"{question} {answer}", words=False) <= numbers_in(passage, words=False):
        return REJECT_UNGROUNDED  # a number the passage never states: invented
    # The answer's key facts (those the question does not give away) must all be there.
    if check_answer(passage, answer, question).recall not in (None, 100.0):
        return REJECT_UNGROUNDED
    return None
