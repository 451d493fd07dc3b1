"""Augment prepared data through any OpenAI-compatible endpoint: paraphrased questions.

Knowledge trained from one phrasing of a question is hard to recall from another, so
each training question is reworded N times with its answer kept verbatim. A rewording
is kept only if it states every key term of the original (numbers, names, identifiers,
quoted terms: `evaluate.facts`), differs from it, and is not close to any validation or
test question (the same contamination check as `astra data prepare`). Replies are cached
by (prompt version, model, input), so a rerun sends nothing and a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from astra_tune.atomic import staged_dir, write_text
from astra_tune.data.formats import Record
from astra_tune.errors import ConfigError, DataError
from astra_tune.home import astra_home
from astra_tune.recipe import AugmentConfig, DataConfig

SPLITS = ("train", "val", "test")
PROMPT_VERSION = "paraphrase-v1"  # change it when the default prompt changes: new cache keys
DEFAULT_PROMPTS = {
    "paraphrase": (
        "Rewrite the question below in {n} different ways. Keep its meaning and keep every "
        "number, name and technical term exactly as written. Do not answer it.\n"
        "Write one rewrite per line, with no numbering and nothing else.\n\n"
        "Question: {question}"
    ),
}

REJECT_SAME = "same as the original"
REJECT_TERMS = "drops a key term of the original"
REJECT_HELD_OUT = "close to a validation or test question"
REJECT_DUPLICATE = "repeats another rewording"
REJECT_EMPTY = "empty or too long"
REJECT_NOT_ASKING = "not a question or request"
REJECT_NEW_NUMBER = "adds a number the original lacks"
# A rewording asks: it ends with "?" or opens like a request ("Tell me ...").
_REQUEST = re.compile(
    r"^(tell|explain|describe|give|list|show|name|say|share|please|could|can|would|i)\b", re.I
)
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.)\]:]|rewrite\s*\d*:|question\s*\d*:)\s*", re.I)


@dataclass
class AugmentResult:
    """What `augment_data` sent, got back, kept and rejected, and where it wrote it."""

    out_dir: Path
    counts: dict[str, int]
    requests: int = 0  # sent to the endpoint (cache hits excluded)
    cached: int = 0
    tokens: int = 0
    generated: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    stopped_by_budget: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cached": self.cached,
            "tokens": self.tokens,
            "generated": self.generated,
            "accepted": self.accepted,
            "rejected": dict(self.rejected.most_common()),
            "stopped_by_budget": self.stopped_by_budget,
            "counts": self.counts,
        }


def load_prompts(config: AugmentConfig) -> dict[str, str]:
    """The prompt templates in effect: the defaults, overridden by `config.prompts`."""
    prompts = dict(DEFAULT_PROMPTS)
    if config.prompts is None:
        return prompts
    import yaml

    path = Path(config.prompts).expanduser()
    if not path.is_file():
        raise ConfigError(f"prompts file not found: {path}", where="data.augment.prompts")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(loaded) - set(DEFAULT_PROMPTS)) if isinstance(loaded, dict) else []
    if not isinstance(loaded, dict) or unknown:
        raise ConfigError(
            f"{path} must map prompt names to templates"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            where=str(path),
            fix=f"known prompts: {', '.join(DEFAULT_PROMPTS)} (see --show-prompts)",
        )
    for name, template in loaded.items():
        if "{question}" not in str(template) or "{n}" not in str(template):
            raise ConfigError(
                f"prompt {name!r} must contain {{question}} and {{n}}", where=str(path)
            )
        prompts[name] = str(template)
    return prompts


def augment_data(
    config: AugmentConfig,
    data_config: DataConfig,
    prepared: Path,
    out_dir: Path,
    *,
    console: Console | None = None,
) -> AugmentResult:
    """Write `prepared` plus accepted rewordings of its training questions to `out_dir`."""
    from astra_tune.progress import progress_bar

    splits = _read_prepared(prepared)
    prompts = load_prompts(config)
    result = AugmentResult(out_dir=out_dir, counts={})
    client = _Client(config, result)
    questions = [(i, _question(r)) for i, r in enumerate(splits["train"])]
    questions = [(i, q) for i, q in questions if q]
    with progress_bar(console=console) as bar:
        task = bar.add_task("paraphrasing", total=len(questions), unit="question")
        replies = client.map(
            [prompts["paraphrase"].format(n=config.paraphrase, question=q) for _, q in questions],
            on_done=lambda: bar.update(
                task, advance=1, description=f"paraphrasing · {result.tokens} tokens"
            ),
        )
    candidates: list[tuple[int, str]] = []
    for (index, question), reply in zip(questions, replies, strict=True):
        if reply is None:
            continue  # not sent: the token budget ran out first
        kept = _accept(question, _lines(reply), result)
        candidates += [(index, text) for text in kept[: config.paraphrase]]
    candidates = _drop_held_out(candidates, splits, data_config, result)
    generated = []
    for index, text in candidates:
        original = splits["train"][index]
        generated.append(_reworded(original, text, config))
    result.accepted = len(generated)
    splits["train"] = splits["train"] + generated
    result.counts = {name: len(records) for name, records in splits.items()}
    _write(out_dir, prepared, splits, result, config)
    return result


def _read_prepared(prepared: Path) -> dict[str, list[Record]]:
    if not (prepared / "train.jsonl").is_file():
        raise DataError(
            f"{prepared} is not prepared data (no train.jsonl)",
            where=str(prepared),
            fix="prepare it first: astra data prepare SOURCES -o DIR",
        )
    splits: dict[str, list[Record]] = {}
    for name in SPLITS:
        path = prepared / f"{name}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        splits[name] = [json.loads(line) for line in lines if line.strip()]
    return splits


def _question(record: Record) -> str | None:
    """The last user turn of a single-answer chat record (what gets reworded)."""
    messages = record.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        return None
    users = [m for m in messages if m.get("role") == "user"]
    return str(users[-1]["content"]) if len(users) == 1 else None


def _lines(reply: str) -> list[str]:
    """A reply's rewordings: one per line, numbering, bullets and quotes removed."""
    out = []
    for line in reply.splitlines():
        text = _NUMBERING.sub("", line).strip().strip('"“”').strip()
        if text:
            out.append(text)
    return out


def rewrite_problem(question: str, text: str) -> str | None:
    """Why `text` is not an acceptable rewording of `question`, or None when it is."""
    from astra_tune.data.dedup import exact_key
    from astra_tune.evaluate.facts import check_answer

    if not text or len(text) > 3 * len(question) + 40:
        return REJECT_EMPTY
    if not (text.endswith("?") or _REQUEST.match(text)):
        return REJECT_NOT_ASKING
    if not _numbers(text) <= _numbers(question):
        return REJECT_NEW_NUMBER  # beside the kept answer, it would teach a wrong fact
    if exact_key(text) == exact_key(question):
        return REJECT_SAME
    if check_answer(text, question).recall not in (None, 100.0):
        return REJECT_TERMS
    return None


def _accept(question: str, rewrites: list[str], result: AugmentResult) -> list[str]:
    """The acceptable rewordings, each once; the rest counted by reason."""
    from astra_tune.data.dedup import exact_key

    seen: set[bytes] = set()
    kept = []
    for text in rewrites:
        result.generated += 1
        problem = rewrite_problem(question, text)
        if problem is None and exact_key(text) in seen:
            problem = REJECT_DUPLICATE
        if problem is not None:
            result.rejected[problem] += 1
            continue
        seen.add(exact_key(text))
        kept.append(text)
    return kept


def _numbers(text: str) -> set[str]:
    """Numbers written as digits: "one charge" or "once" is wording, not a new value."""
    from astra_tune.evaluate.facts import numbers_in

    return numbers_in(text, words=False)


def _drop_held_out(
    candidates: list[tuple[int, str]],
    splits: dict[str, list[Record]],
    data_config: DataConfig,
    result: AugmentResult,
) -> list[tuple[int, str]]:
    """Rewordings too close to a val/test question would leak it into training."""
    from astra_tune.data.formats import prompt_text
    from astra_tune.data.split import contaminated

    threshold = data_config.split.contamination_threshold
    held_out = [prompt_text(r) for name in ("val", "test") for r in splits[name]]
    if threshold is None or not held_out or not candidates:
        return candidates
    # Held-out questions indexed, every rewording looked up: each one close to any of them.
    hits = contaminated(
        held_out,
        [text for _, text in candidates],
        threshold=threshold,
        num_perm=data_config.dedup.num_perm,
        shingle_words=data_config.dedup.shingle_words,
    )
    leaking = {candidate for candidate, _, _ in hits}
    if leaking:
        result.rejected[REJECT_HELD_OUT] += len(leaking)
    return [c for i, c in enumerate(candidates) if i not in leaking]


def _reworded(original: Record, question: str, config: AugmentConfig) -> Record:
    messages = [dict(m) for m in original["messages"]]
    user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[user]["content"] = question
    record: Record = {"messages": messages, "source": original.get("source", "?")}
    if "category" in original:
        record["category"] = original["category"]
    record["augmented_by"] = {
        "endpoint": config.endpoint,
        "model": config.model,
        "prompt": PROMPT_VERSION if config.prompts is None else f"file:{config.prompts}",
    }
    return record


def _write(
    out_dir: Path,
    prepared: Path,
    splits: dict[str, list[Record]],
    result: AugmentResult,
    config: AugmentConfig,
) -> None:
    report_path = prepared / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    report["augment"] = {
        **result.to_json(),
        "from": str(prepared),
        "config": config.model_dump(mode="json"),
    }
    with staged_dir(out_dir) as staging:
        for name in SPLITS:
            lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in splits[name]]
            (staging / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
        (staging / "report.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )


class _Client:
    """Cached, concurrent, budgeted chat requests to one OpenAI-compatible endpoint."""

    def __init__(self, config: AugmentConfig, result: AugmentResult) -> None:
        from astra_tune.endpoints import openai_client

        self.openai = openai_client(config.endpoint, config.api_key_env,
                                    field="data.augment.api_key_env", retries=4)  # fmt: skip
        self.config = config
        self.result = result
        self.cache_dir = astra_home() / "cache" / "augment"
        self.lock = threading.Lock()

    def map(self, prompts: list[str], on_done: Any) -> list[str | None]:
        """Each prompt's reply, in order; None for prompts not sent once over budget."""
        replies: list[str | None] = [None] * len(prompts)
        pending: dict[Future[str | None], int] = {}
        todo = iter(enumerate(prompts))
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            while True:
                while len(pending) < self.config.concurrency and not self._over_budget():
                    item = next(todo, None)
                    if item is None:
                        break
                    pending[pool.submit(self._reply, item[1])] = item[0]
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    replies[pending.pop(future)] = future.result()
                    on_done()
        self.result.stopped_by_budget = any(r is None for r in replies)
        return replies

    def _over_budget(self) -> bool:
        limit = self.config.max_cost_tokens
        with self.lock:
            return limit is not None and self.result.tokens >= limit

    def _reply(self, prompt: str) -> str:
        identity = [PROMPT_VERSION, self.config.model, self.config.temperature,
                    self.config.max_tokens, self.config.seed, prompt]  # fmt: skip
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.is_file():
            with self.lock:
                self.result.cached += 1
            return str(json.loads(path.read_text(encoding="utf-8"))["reply"])
        reply, tokens = self._ask(prompt)
        write_text(path, json.dumps({"model": self.config.model, "prompt": prompt,
                                     "reply": reply, "tokens": tokens}))  # fmt: skip
        with self.lock:
            self.result.requests += 1
            self.result.tokens += tokens
        return reply

    def _ask(self, prompt: str) -> tuple[str, int]:
        import openai

        where = f"{self.config.endpoint} (model {self.config.model})"
        try:
            response = self.openai.chat.completions.create(
                model=self.config.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=self.config.temperature,
                max_tokens=self.config.max_tokens,
                seed=self.config.seed,
            )
        except openai.APIConnectionError as exc:
            raise DataError(
                f"cannot reach the augmentation endpoint: {exc}",
                where=where,
                fix="start it (e.g. astra serve -m MODEL) or correct data.augment.endpoint",
            ) from exc
        except openai.NotFoundError as exc:
            raise DataError(
                f"the endpoint does not serve model {self.config.model!r}: {exc.message}",
                where=where,
                fix="pick a name from its /v1/models list",
            ) from exc
        except openai.APIStatusError as exc:
            raise DataError(
                f"the endpoint answered {exc.status_code}: {exc.message}", where=where
            ) from exc
        text = (response.choices[0].message.content or "") if response.choices else ""
        tokens = response.usage.total_tokens if response.usage else 0
        return text, tokens
