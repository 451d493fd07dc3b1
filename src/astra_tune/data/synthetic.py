"""Synthetic instruction records with planted duplicates, to measure deduplication.

Words follow a Zipf-like distribution (real function words first), so unrelated records
share common words the way real text does. Some records share an instruction template
and differ only in their input, the classic false-positive trap for near-dedup.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

FUNCTION_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "an",
    "but",
    "not",
    "have",
    "has",
    "which",
    "can",
    "will",
    "you",
    "your",
    "we",
    "they",
    "their",
    "more",
    "all",
    "one",
    "also",
    "when",
    "there",
]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "to",
    "sa",
    "vel",
    "dun",
    "pri",
    "ose",
    "ath",
    "mar",
    "lin",
    "qua",
    "zo",
    "fe",
    "gri",
    "tho",
    "bel",
    "nu",
    "sta",
]
TEMPLATES = (
    "Summarize the following paragraph in one sentence.",
    "Translate the following text into plain English.",
    "Rewrite the following text so that a child can understand it.",
)


@dataclass
class PlantedSet:
    """Records (alpaca rows) and the truth: for each planted copy, its original's index."""

    records: list[dict[str, Any]]
    exact: dict[int, int] = field(default_factory=dict)
    near: dict[int, int] = field(default_factory=dict)


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set(FUNCTION_WORDS)
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    ordered = list(FUNCTION_WORDS) + sorted(words - set(FUNCTION_WORDS))
    return ordered


def _sentence(rng: random.Random, vocab: list[str], weights: list[float], n: int) -> str:
    words = rng.choices(vocab, weights=weights, k=n)
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def _near_copy(rng: random.Random, record: dict[str, Any], vocab: list[str]) -> dict[str, Any]:
    """A copy with one realistic small edit to the answer."""
    words = record["output"].split()
    kind = rng.randrange(4)
    if kind == 0:  # punctuation and casing noise
        words = [w.upper() if rng.random() < 0.1 else w for w in words]
        words[-1] = words[-1].rstrip(".") + "!"
    elif kind == 1:  # one word replaced
        words[rng.randrange(len(words))] = rng.choice(vocab[100:])
    elif kind == 2:  # a short sentence appended
        words += ["Hope", "this", "helps."]
    else:  # one word deleted
        del words[rng.randrange(len(words))]
    return {**record, "output": " ".join(words)}


def planted_records(
    n: int, *, duplicate_share: float = 0.05, seed: int = 0, vocab_size: int = 20000
) -> PlantedSet:
    """`n` records of which about `duplicate_share` are planted copies (half exact, half near)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng, vocab_size)
    weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(vocab))]
    n_copies = int(n * duplicate_share)
    planted = PlantedSet(records=[])
    for _ in range(n - n_copies):
        templated = rng.random() < 0.2
        instruction = (
            rng.choice(TEMPLATES)
            if templated
            else _sentence(rng, vocab, weights, rng.randint(6, 14))
        )
        source = _sentence(rng, vocab, weights, rng.randint(25, 60)) if templated else ""
        output = " ".join(
            _sentence(rng, vocab, weights, rng.randint(8, 16)) for _ in range(rng.randint(3, 6))
        )
        planted.records.append({"instruction": instruction, "input": source, "output": output})
    originals = rng.sample(range(len(planted.records)), n_copies)
    for number, original in enumerate(originals):
        record = planted.records[original]
        if number % 2 == 0:
            copy = {**record, "output": "  " + record["output"].upper() + " "}
            planted.exact[len(planted.records)] = original
        else:
            copy = _near_copy(rng, record, vocab)
            planted.near[len(planted.records)] = original
        planted.records.append(copy)
    # Shuffle, keeping every copy after its original so "keep the first" keeps originals.
    order = list(range(len(planted.records)))
    rng.shuffle(order)
    position = {old: new for new, old in enumerate(order)}
    for copy, original in {**planted.exact, **planted.near}.items():
        if position[copy] < position[original]:
            position[copy], position[original] = position[original], position[copy]
    by_position = sorted(range(len(planted.records)), key=position.__getitem__)
    new_index = {old: new for new, old in enumerate(by_position)}
    return PlantedSet(
        records=[planted.records[old] for old in by_position],
        exact={new_index[c]: new_index[o] for c, o in planted.exact.items()},
        near={new_index[c]: new_index[o] for c, o in planted.near.items()},
    )
