"""Pairwise LLM judgment through any OpenAI-compatible endpoint, both answer orders.

Judges prefer whichever answer they read first (or second) more often than chance, so
every example is judged twice with the answers swapped; a verdict counts only when both
orders agree, and a split decision is a tie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.progress import Progress

from astra_tune.evaluate.compare import Interval, mean_interval
from astra_tune.recipe import JudgeConfig

Message = dict[str, str]

PROMPT = """You are judging two answers to the same conversation. Decide which answer \
is more helpful, correct and faithful to the reference.

Conversation:
{conversation}

Reference answer: {reference}

Answer A: {first}

Answer B: {second}

Reply with exactly one letter: A if answer A is better, B if answer B is better, or T if \
they are equally good."""

_VERDICT = re.compile(r"\b([ABT])\b")


@dataclass(frozen=True)
class JudgeResult:
    """Per-example verdicts (1 model better, 0 tie, -1 against better, None invalid)."""

    judge: str
    verdicts: list[int | None]
    consistent: float  # share of judged examples whose two orders agreed
    win_rate: Interval  # wins + ties/2 over valid examples, with a bootstrap interval

    def to_json(self) -> dict[str, Any]:
        valid = [v for v in self.verdicts if v is not None]
        return {
            "judge": self.judge,
            "examples": len(self.verdicts),
            "wins": valid.count(1),
            "ties": valid.count(0),
            "losses": valid.count(-1),
            "invalid": self.verdicts.count(None),
            "consistent": self.consistent,
            "win_rate": self.win_rate.to_json(),
            "verdicts": self.verdicts,
        }


def parse_verdict(text: str) -> str | None:
    """The judge's letter (A, B or T), or None when it did not give exactly one."""
    found = set(_VERDICT.findall(text.strip().upper()[:40]))
    return found.pop() if len(found) == 1 else None


def judge_pairs(
    records: list[list[Message]],
    answers: list[str],
    against: list[str],
    config: JudgeConfig,
    bar: Progress | None = None,
) -> JudgeResult:
    """Judge model answers against the other model's, each example in both orders."""
    from astra_tune.endpoints import openai_client

    client = openai_client(config.base_url, config.api_key_env,
                           field="eval.judge.api_key_env", retries=3)  # fmt: skip
    count = min(len(records), config.max_examples or len(records))
    task = bar.add_task(f"judging with {config.model}", total=2 * count) if bar else None
    verdicts: list[int | None] = []
    agreed = judged = 0
    for index in range(count):
        record = records[index]
        # Order 1: the model's answer is A. Order 2: it is B.
        first = _ask(client, config.model, record, answers[index], against[index])
        second = _ask(client, config.model, record, against[index], answers[index])
        if bar is not None and task is not None:
            bar.advance(task, 2)
        one = {"A": 1, "B": -1, "T": 0}.get(first or "")
        two = {"B": 1, "A": -1, "T": 0}.get(second or "")
        if one is None or two is None:
            verdicts.append(None)
            continue
        judged += 1
        agreed += one == two
        verdicts.append(one if one == two else 0)
    valid = np.array([v for v in verdicts if v is not None], dtype=np.float64)
    points = (valid + 1) / 2  # win 1, tie 0.5, loss 0
    return JudgeResult(
        judge=f"{config.model} at {config.base_url}",
        verdicts=verdicts,
        consistent=agreed / judged if judged else float("nan"),
        win_rate=mean_interval(points),
    )


def _ask(client: Any, model: str, record: list[Message], first: str, second: str) -> str | None:
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in record[:-1])
    prompt = PROMPT.format(conversation=conversation, reference=record[-1]["content"],
                           first=first, second=second)  # fmt: skip
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=4,
    )
    return parse_verdict(reply.choices[0].message.content or "")
