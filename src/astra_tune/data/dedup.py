"""Exact and near-duplicate detection; the first occurrence of each cluster is kept."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_WORDS = re.compile(r"\w+")


def exact_key(text: str) -> bytes:
    """Hash of the text with case and whitespace folded (so 'Hi  there' == 'hi there')."""
    folded = " ".join(text.casefold().split())
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).digest()


def shingles(text: str, size: int) -> set[bytes]:
    """Word n-grams of the case-folded text; short texts give one shingle of all words."""
    words = _WORDS.findall(text.casefold())
    if len(words) <= size:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + size]).encode("utf-8") for i in range(len(words) - size + 1)}


@dataclass
class DuplicateClusters:
    """For each kept record (by index), the indices of the records dropped as its copies."""

    members: dict[int, list[int]] = field(default_factory=dict)

    def add(self, kept: int, dropped: int) -> None:
        self.members.setdefault(kept, []).append(dropped)

    @property
    def dropped(self) -> set[int]:
        return {index for copies in self.members.values() for index in copies}


def exact_duplicates(texts: Sequence[str]) -> DuplicateClusters:
    """Records whose folded text equals an earlier one's."""
    first: dict[bytes, int] = {}
    clusters = DuplicateClusters()
    for index, text in enumerate(texts):
        key = exact_key(text)
        kept = first.setdefault(key, index)
        if kept != index:
            clusters.add(kept, index)
    return clusters


class NearDuplicateIndex:
    """MinHash LSH (datasketch) over word shingles, with the estimate re-checked per pair.

    LSH only proposes candidates; a candidate counts as a duplicate when its MinHash
    Jaccard estimate reaches the threshold, which keeps precision at the set threshold.
    """

    def __init__(self, threshold: float, num_perm: int = 128, shingle_words: int = 3) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[int, np.ndarray] = {}

    def signature(self, text: str) -> object:
        from datasketch import MinHash

        minhash = MinHash(num_perm=self.num_perm, seed=1)
        minhash.update_batch(list(shingles(text, self.shingle_words)))
        return minhash

    def best_match(self, minhash: object) -> tuple[int, float] | None:
        """The indexed record most similar to `minhash` above the threshold, if any."""
        best: tuple[int, float] | None = None
        for key in self._lsh.query(minhash):
            similarity = float(np.mean(self._signatures[key] == minhash.hashvalues))  # type: ignore[attr-defined]
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best

    def add(self, key: int, minhash: object) -> None:
        self._lsh.insert(key, minhash)
        self._signatures[key] = minhash.hashvalues  # type: ignore[attr-defined]


def near_duplicates(
    texts: Sequence[str],
    candidates: Sequence[int],
    *,
    threshold: float,
    num_perm: int,
    shingle_words: int,
) -> DuplicateClusters:
    """Among `candidates` (indices into texts, in order), those that repeat an earlier one."""
    index = NearDuplicateIndex(threshold, num_perm, shingle_words)
    clusters = DuplicateClusters()
    for position in candidates:
        minhash = index.signature(texts[position])
        match = index.best_match(minhash)
        if match is None:
            index.add(position, minhash)
        else:
            clusters.add(match[0], position)
    return clusters
