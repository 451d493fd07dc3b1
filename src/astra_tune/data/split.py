"""Stratified train/val/test split and the val/test contamination check."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from astra_tune.data.dedup import NearDuplicateIndex


@dataclass(frozen=True)
class SplitPlan:
    """Indices of records per split."""

    train: list[int]
    val: list[int]
    test: list[int]


def stratified_split(groups: Sequence[str], *, val: float, test: float, seed: int) -> SplitPlan:
    """Split indices so every group keeps its share in each split.

    Each group is shuffled and its members spread evenly over [0, 1); sorting all
    records by that position interleaves the groups, so any prefix of the order is
    stratified. Test takes the first share, val the next, train the rest.
    """
    rng = random.Random(seed)
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    keyed: list[tuple[float, float, int]] = []
    for group in sorted(members):
        indices = members[group]
        rng.shuffle(indices)
        offset = rng.random()
        for rank, index in enumerate(indices):
            keyed.append(((rank + offset) / len(indices), rng.random(), index))
    order = [index for *_, index in sorted(keyed)]
    n_test = round(len(order) * test)
    n_val = round(len(order) * val)
    if len(order) - n_test - n_val < 1 and order:
        raise ValueError("val and test would leave no training records")
    return SplitPlan(
        train=sorted(order[n_test + n_val :]),
        val=sorted(order[n_test : n_test + n_val]),
        test=sorted(order[:n_test]),
    )


def contaminated(
    train_prompts: Sequence[str],
    held_out_prompts: Sequence[str],
    *,
    threshold: float,
    num_perm: int,
    shingle_words: int,
) -> list[tuple[int, int, float]]:
    """(held-out index, train index, similarity) for held-out prompts too close to training."""
    index = NearDuplicateIndex(threshold, num_perm, shingle_words)
    for position, prompt in enumerate(train_prompts):
        index.add(position, index.signature(prompt))
    found = []
    for position, prompt in enumerate(held_out_prompts):
        match = index.best_match(index.signature(prompt))
        if match is not None:
            found.append((position, match[0], match[1]))
    return found
