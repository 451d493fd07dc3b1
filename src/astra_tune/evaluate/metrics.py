"""Scores of generated answers against references, kept per example for resampling.

Every metric is stored as per-example sufficient statistics plus a function that turns
summed statistics into the corpus score. A mean metric (ROUGE, exact match, F1) keeps
(value, 1); corpus BLEU and chrF keep sacrebleu's n-gram counts; perplexity keeps (NLL
sum, token count). Bootstrap resampling then sums the rows it drew and reduces them, so
every confidence interval is computed on the same corpus-level definition as the score.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Text-overlap metrics are on a 0-100 scale (sacrebleu's convention), so they share a plot.
OVERLAP = ("facts", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "f1")
LIKELIHOOD = ("perplexity", "nll")
ALL = OVERLAP + LIKELIHOOD
LOWER_IS_BETTER = frozenset(LIKELIHOOD)


@dataclass
class MetricColumn:
    """One metric over a set of examples: statistics per example and how to reduce them."""

    name: str
    stats: np.ndarray  # (examples, k)
    reduce: Callable[[np.ndarray], float]  # summed statistics (k,) -> score

    def score(self, rows: np.ndarray | None = None) -> float:
        """The corpus score over all examples, or over the rows given (with repeats)."""
        chosen = self.stats if rows is None else self.stats[rows]
        return float(self.reduce(chosen.sum(axis=0)))

    def per_example(self) -> list[float]:
        """Each example scored on its own (sentence BLEU, that example's perplexity...)."""
        return [float(self.reduce(row)) for row in self.stats]

    @property
    def higher_is_better(self) -> bool:
        return self.name not in LOWER_IS_BETTER


def _mean(summed: np.ndarray) -> float:
    return float(summed[0] / summed[1]) if summed[1] else 0.0


def mean_column(name: str, values: Sequence[float]) -> MetricColumn:
    stats = np.array([[v, 1.0] for v in values], dtype=np.float64).reshape(-1, 2)
    return MetricColumn(name, stats, _mean)


# -- SQuAD-style exact match and token F1 ------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalization (0-100)."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(reference).split()
    if not predicted or not expected:
        return 100.0 if predicted == expected else 0.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 100.0 * 2 * precision * recall / (precision + recall)


# -- library metrics ---------------------------------------------------------------------


def rouge_columns(predictions: Sequence[str], references: Sequence[str]) -> list[MetricColumn]:
    """ROUGE-1/2/L F-measures (rouge-score, Porter stemming), mean over examples."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return [
        mean_column(key, [100.0 * s[key].fmeasure for s in scores])
        for key in ("rouge1", "rouge2", "rougeL")
    ]


def sacrebleu_column(
    name: str, predictions: Sequence[str], references: Sequence[str]
) -> MetricColumn:
    """Corpus BLEU or chrF from sacrebleu's per-sentence statistics.

    sacrebleu's paired bootstrap works the same way (significance.py): it extracts the
    statistics once and recomputes the score from resampled sums.
    """
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU(effective_order=True) if name == "bleu" else CHRF()
    stats = metric._extract_corpus_statistics(list(predictions), [list(references)])
    array = np.array(stats, dtype=np.float64)

    def reduce(summed: np.ndarray) -> float:
        return float(metric._compute_score_from_stats([int(x) for x in summed]).score)

    return MetricColumn(name, array, reduce)


def likelihood_columns(nll: Sequence[tuple[float, int]]) -> list[MetricColumn]:
    """Perplexity and mean NLL per token over the reference answers' tokens."""
    stats = np.array(nll, dtype=np.float64).reshape(-1, 2)

    def mean_nll(summed: np.ndarray) -> float:
        return float(summed[0] / summed[1]) if summed[1] else float("nan")

    def perplexity(summed: np.ndarray) -> float:
        return float(np.exp(mean_nll(summed)))

    return [MetricColumn("perplexity", stats, perplexity), MetricColumn("nll", stats, mean_nll)]


def facts_column(
    predictions: Sequence[str], references: Sequence[str], questions: Sequence[str]
) -> MetricColumn:
    """Key-fact recall (0-100): per example, the share of the reference's numbers, names
    and quoted terms (not given in the question) that the answer states. Examples whose
    reference has no key fact carry no weight, so they neither help nor hurt."""
    from astra_tune.evaluate.facts import check_answer, common_terms

    common = common_terms(list(references), list(questions))
    rows = []
    for prediction, reference, question in zip(predictions, references, questions, strict=True):
        recall = check_answer(prediction, reference, question, common).recall
        rows.append([recall, 1.0] if recall is not None else [0.0, 0.0])
    return MetricColumn("facts", np.array(rows, dtype=np.float64).reshape(-1, 2), _mean)


def overlap_columns(
    names: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    questions: Sequence[str] | None = None,
) -> list[MetricColumn]:
    """The requested text-overlap metrics for generated answers (`facts` needs the
    questions, to leave out what they already say)."""
    columns: list[MetricColumn] = []
    if "facts" in names:
        columns.append(facts_column(predictions, references, questions or [""] * len(references)))
    if any(n.startswith("rouge") for n in names):
        columns += [c for c in rouge_columns(predictions, references) if c.name in names]
    for name in ("bleu", "chrf"):
        if name in names:
            columns.append(sacrebleu_column(name, predictions, references))
    pairs = list(zip(predictions, references, strict=True))
    if "exact_match" in names:
        columns.append(mean_column("exact_match", [exact_match(p, r) for p, r in pairs]))
    if "f1" in names:
        columns.append(mean_column("f1", [token_f1(p, r) for p, r in pairs]))
    return columns
