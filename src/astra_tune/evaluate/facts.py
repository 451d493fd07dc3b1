"""Key facts of a reference answer, and how many of them a generated answer states.

A fluent answer with the wrong value ("runs for 12 hours" where the reference says 3)
scores ROUGE-L 86: overlap metrics reward the style a fine-tune learns first. What a user
of a support or docs assistant needs is the value, so this metric looks only at it: the
reference's numbers, names and quoted terms that the question does not already contain
(a fact the question gives away proves nothing), and the share of them the answer has.

Written here rather than taken from a library: the answer-correctness metrics that
exist (SQuAD EM/F1, ROUGE, BERTScore, LLM judges) either score wording or need a model;
this one must run offline, be deterministic and explain itself per example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# 3, 3.5, 1,000, 10:30 (thousands separators dropped when normalized)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*")
_QUOTED = re.compile(r'"([^"\n]{1,80})"|“([^”\n]{1,80})”|`([^`\n]{1,80})`')
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*(?:[._]\w+)+\b|\b[a-z]+[A-Z]\w*\b")
_SENTENCE_END = re.compile(r"[.!?:]\s*$|^\s*$")
_SMALL_NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_SMALL_NUMBERS)} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
    "eighty": "80", "ninety": "90", "hundred": "100", "dozen": "12", "once": "1", "twice": "2",
}  # fmt: skip


@dataclass(frozen=True)
class FactCheck:
    """One example: its key facts and which of them the answer states."""

    facts: tuple[str, ...]
    found: tuple[str, ...]

    @property
    def recall(self) -> float | None:
        """Share of the key facts stated (0-100); None when the reference has none."""
        return 100.0 * len(self.found) / len(self.facts) if self.facts else None


def key_facts(reference: str, question: str = "") -> tuple[str, ...]:
    """Numbers, names, identifiers and quoted terms of `reference` not in `question`,
    normalized (lower case, numbers without separators), in order of appearance."""
    given_words = _words(question)
    given_numbers = _numbers(question)
    given_text = question.lower()
    facts: list[str] = []
    for match in _QUOTED.finditer(reference):
        term = " ".join(next(g for g in match.groups() if g).lower().split())
        if term and term not in given_text:
            facts.append(f'"{term}"')
    for number in _numbers(reference, words=False):
        if number not in given_numbers:
            facts.append(number)
    for name in _names(reference):
        if name not in given_words:
            facts.append(name)
    return tuple(dict.fromkeys(facts))


# A term in at least this share of an evaluation set's references (the product's brand
# in "The Orrery Vex ..."), counted once there are enough references to tell.
COMMON_SHARE = 0.5
COMMON_MIN_REFERENCES = 10


def common_terms(references: list[str], questions: list[str]) -> frozenset[str]:
    """Key facts that most references of a set share: house style, not facts, so a model
    that learned only the style does not get them for free."""
    if len(references) < COMMON_MIN_REFERENCES:
        return frozenset()
    counts: dict[str, int] = {}
    for reference, question in zip(references, questions, strict=True):
        for fact in key_facts(reference, question):
            counts[fact] = counts.get(fact, 0) + 1
    return frozenset(f for f, n in counts.items() if n >= COMMON_SHARE * len(references))


def check_answer(
    answer: str, reference: str, question: str = "", common: frozenset[str] = frozenset()
) -> FactCheck:
    """Which key facts of `reference` (less the set's `common` terms) `answer` states."""
    facts = tuple(f for f in key_facts(reference, question) if f not in common)
    words = _words(answer)
    numbers = _numbers(answer)
    text = " ".join(answer.lower().split())
    found = []
    for fact in facts:
        if fact.startswith('"'):
            hit = fact.strip('"') in text
        elif fact[0].isdigit():
            hit = fact in numbers
        else:
            hit = fact in words
        if hit:
            found.append(fact)
    return FactCheck(facts, tuple(found))


def numbers_in(text: str, *, words: bool = True) -> set[str]:
    """The numbers `text` states, normalized; with `words`, spelled-out small ones too."""
    return set(_numbers(text, words=words))


def _numbers(text: str, *, words: bool = True) -> set[str] | list[str]:
    """Numbers in `text`, normalized; with `words`, spelled-out small numbers count too."""
    found = [m.group().replace(",", "") for m in _NUMBER.finditer(text)]
    found = [n.rstrip(".:") for n in found]
    if not words:
        return list(dict.fromkeys(found))
    spelled = [_NUMBER_WORDS[w] for w in _words(text) if w in _NUMBER_WORDS]
    return set(found) | set(spelled)


def _words(text: str) -> set[str]:
    return {_base(m.group()) for m in _WORD.finditer(text)} | {
        m.group().lower() for m in _IDENTIFIER.finditer(text)
    }


def _names(text: str) -> list[str]:
    """Capitalized words not at a sentence start (there any word is), words that are
    capitalized inside (iPhone, USB-C, SmolLM) wherever they are, and code identifiers."""
    names = []
    for match in _WORD.finditer(text):
        word = match.group()
        inner = any(c.isupper() for c in word[1:]) or (word.isupper() and len(word) > 1)
        opening = _SENTENCE_END.search(text[: match.start()]) is not None
        if inner or (word[0].isupper() and not opening):
            names.append(_base(word))
    names += [m.group().lower() for m in _IDENTIFIER.finditer(text)]
    return names


def _base(word: str) -> str:
    """Lower case, without a possessive ('Vex's' -> 'vex') or trailing hyphen."""
    word = word.lower().rstrip("-")
    for suffix in ("'s", "’s"):
        if word.endswith(suffix):
            return word[: -len(suffix)]
    return word
