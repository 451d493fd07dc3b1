"""Metric values against references worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from astra_tune.evaluate.compare import compare, mean_interval, resamples
from astra_tune.evaluate.metrics import (
    exact_match,
    likelihood_columns,
    mean_column,
    normalize_answer,
    overlap_columns,
    sacrebleu_column,
    token_f1,
)


def test_squad_normalization_exact_match_and_f1() -> None:
    assert normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"
    assert exact_match("The cat.", "cat") == 100.0
    assert exact_match("a cat", "the dog") == 0.0
    # "cat sat" shared: precision 2/3 ("the" is dropped as an article), recall 2/3.
    assert token_f1("The cat sat mat!", "a cat sat down") == pytest.approx(100 * 2 / 3)
    # precision 2/2, recall 2/4 -> F1 = 2 * 1 * 0.5 / 1.5
    assert token_f1("cat sat", "cat sat on mat") == pytest.approx(100 * 2 / 3)
    assert token_f1("", "") == 100.0
    assert token_f1("x", "") == 0.0


def test_rouge_by_hand() -> None:
    names = ["rouge1", "rouge2", "rougeL"]
    columns = {c.name: c for c in overlap_columns(names, ["the cat sat"], ["the cat sat down"])}
    # unigrams: P 3/3, R 3/4 -> F 6/7; bigrams: P 2/2, R 2/3 -> F 0.8; LCS 3 -> as unigrams
    assert columns["rouge1"].score() == pytest.approx(100 * 6 / 7)
    assert columns["rouge2"].score() == pytest.approx(80.0)
    assert columns["rougeL"].score() == pytest.approx(100 * 6 / 7)
    reordered = {c.name: c for c in overlap_columns(names, ["sat the cat"], ["the cat sat"])}
    assert reordered["rouge1"].score() == pytest.approx(100.0)
    assert reordered["rougeL"].score() == pytest.approx(100 * 2 / 3)  # LCS "the cat"


def test_bleu_and_chrf_by_hand() -> None:
    bleu = sacrebleu_column(
        "bleu", ["the cat sat on", "x y z w"], ["the cat sat on the mat", "x y z w"]
    )
    # Every n-gram of both hypotheses matches; only brevity is penalized.
    first, second = bleu.per_example()
    assert first == pytest.approx(100 * math.exp(1 - 6 / 4))
    assert second == pytest.approx(100.0)
    assert bleu.score() == pytest.approx(100 * math.exp(1 - 10 / 8))  # corpus: 8 vs 10 words
    chrf = sacrebleu_column("chrf", ["abc", ""], ["abc", "def"])
    assert chrf.per_example() == [pytest.approx(100.0), 0.0]
    # Corpus: precision 1, recall 1/2 at every n-gram order; F(beta=2) = 5PR / (4P + R).
    assert chrf.score() == pytest.approx(100 * 5 * 0.5 / 4.5)


def test_perplexity_is_over_all_reference_tokens() -> None:
    perplexity, nll = likelihood_columns([(2.0, 2), (1.0, 2)])
    assert nll.score() == pytest.approx(0.75)
    assert perplexity.score() == pytest.approx(math.exp(0.75))
    assert perplexity.per_example() == [pytest.approx(math.e), pytest.approx(math.exp(0.5))]
    assert not perplexity.higher_is_better


def test_paired_bootstrap_of_differences() -> None:
    rows = resamples(50, 500, seed=1)
    rng = np.random.default_rng(0)
    base = list(rng.uniform(0, 50, size=50))
    same = compare(mean_column("f1", base), mean_column("f1", base), rows)
    assert (same.difference.value, same.difference.low, same.difference.high) == (0, 0, 0)
    assert (same.wins, same.ties, same.losses) == (0, 50, 0)
    assert not same.significant
    # Paired: a constant gain of 10 has no spread at all, however noisy the examples are.
    better = compare(mean_column("f1", [b + 10 for b in base]), mean_column("f1", base), rows)
    assert better.difference.low == pytest.approx(10.0)
    assert better.difference.high == pytest.approx(10.0)
    assert better.wins == 50
    assert better.significant
    assert better.model.low < better.model.value < better.model.high
    # Lower perplexity is the win.
    tuned, _ = likelihood_columns([(1.0, 1)] * 3)
    base_ppl, _ = likelihood_columns([(2.0, 1)] * 3)
    lower = compare(tuned, base_ppl, resamples(3, 200, seed=0))
    assert lower.wins == 3
    assert lower.difference.value == pytest.approx(math.e - math.exp(2))


def test_mean_interval() -> None:
    constant = mean_interval(np.full(20, 4.0))
    assert (constant.value, constant.low, constant.high) == (4.0, 4.0, 4.0)
    spread = mean_interval(np.array([1.0, 5.0] * 20))
    assert spread.low < 3.0 < spread.high
    assert math.isnan(mean_interval(np.array([])).value)
