"""Augment prepared data through any OpenAI-compatible endpoint.

Four kinds of records, each optional, all checked before they are kept:
- answers: a teacher model answers training conversations that end in a user turn
  (sequence-level distillation);
- questions from docs: question/answer pairs grounded in each training text record's
  passages (`doc_questions.py`), the passage kept with them;
- paraphrases: knowledge trained from one phrasing of a question is hard to recall from
  another, so each training question (the generated ones too) is reworded N times with
  its answer kept verbatim; a rewording must state every key term of the original
  (numbers, names, identifiers, quoted terms: `evaluate.facts`) and differ from it;
- negatives: a plausible wrong answer per question, written as `rejected` (DPO data).
Nothing generated may come close to a validation or test question (the same
contamination check as `astra data prepare`). Replies are cached (`augment_client.py`),
so a rerun sends nothing and a killed run resumes; the output is written atomically.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from astra_tune.atomic import staged_dir
from astra_tune.data.augment_client import AugmentClient, Usage
from astra_tune.data.doc_questions import Fact, Passage
from astra_tune.data.formats import Record
from astra_tune.errors import ConfigError, DataError
from astra_tune.recipe import AugmentConfig, DataConfig

SPLITS = ("train", "val", "test")
# A prompt's version names its default template: change it when the template changes.
PROMPT_VERSIONS = {
    "paraphrase": "paraphrase-v1",
    "questions": "questions-v2",
    "negative": "negative-v1",
    "answer": "answer-v1",  # the conversation itself is sent: no template
}
DEFAULT_PROMPTS = {
    "paraphrase": (
        "Rewrite the question below in {n} different ways. Keep its meaning and keep every "
        "number, name and technical term exactly as written. Do not answer it.\n"
        "Write one rewrite per line, with no numbering and nothing else.\n\n"
        "Question: {question}"
    ),
    "questions": (
        "Section: {heading}\nFact: {fact}\n\n"
        "Write one question a user would ask to learn this fact. Write only the question."
    ),
    "negative": (
        "Here is a question and its correct answer. Write one wrong answer that sounds just "
        "as sure, in the same style and length, but states different facts (other numbers, "
        "names or values). Write only the wrong answer.\n\n"
        "Question: {question}\nCorrect answer: {answer}"
    ),
}
# The placeholders each template must keep.
PLACEHOLDERS = {
    "paraphrase": ("{question}", "{n}"),
    "questions": ("{fact}",),
    "negative": ("{question}", "{answer}"),
}

REJECT_SAME = "same as the original"
REJECT_TERMS = "drops a key term of the original"
REJECT_HELD_OUT = "close to a validation or test question"
REJECT_DUPLICATE = "repeats another rewording"
REJECT_EMPTY = "empty or too long"
REJECT_NOT_ASKING = "not a question or request"
REJECT_NEW_NUMBER = "adds a number the original lacks"
REJECT_NO_ANSWER = "no answer came back"
REJECT_EXTRA = "more than asked for"
REJECT_GIVES_AWAY = "the question states the answer"
REJECT_OFF_TOPIC = "the question is about something else"
REJECT_RIGHT_ANSWER = "negative states the right answer"
# A rewording asks: it ends with "?" or opens like a request ("Tell me ...").
_REQUEST = re.compile(
    r"^(tell|explain|describe|give|list|show|name|say|share|please|could|can|would|i)\b", re.I
)
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.)\]:]|rewrite\s*\d*:|question\s*\d*:)\s*", re.I)


KINDS = ("answers", "questions", "paraphrases", "negatives")


@dataclass
class AugmentResult:
    """What `augment_data` sent, got back, kept and rejected, and where it wrote it."""

    out_dir: Path
    counts: dict[str, int]
    usage: Usage = field(default_factory=Usage)
    generated: Counter[str] = field(default_factory=Counter)  # by kind
    accepted: Counter[str] = field(default_factory=Counter)  # by kind
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    stopped_by_budget: bool = False

    @property
    def requests(self) -> int:
        """Requests sent to the endpoint (cache hits excluded)."""
        return self.usage.requests

    @property
    def cached(self) -> int:
        return self.usage.cached

    @property
    def tokens(self) -> int:
        return self.usage.tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cached": self.cached,
            "tokens": self.tokens,
            "generated": dict(self.generated),
            "accepted": dict(self.accepted),
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
        missing = [p for p in PLACEHOLDERS[name] if p not in str(template)]
        if missing:
            raise ConfigError(
                f"prompt {name!r} must contain {' and '.join(missing)}", where=f"{path}: {name}"
            )
        prompts[name] = str(template)
    return prompts


@dataclass
class _Run:
    """One augmentation: settings, prompts, the client and the counts, passed to each kind."""

    config: AugmentConfig
    data_config: DataConfig
    prompts: dict[str, str]
    client: AugmentClient
    result: AugmentResult
    splits: dict[str, list[Record]]
    bar: Any
    endpoint_label: str  # the URL, or the `astra serve` started for the job

    def ask(self, kind: str, prompts: list[Any]) -> list[str | None]:
        """Replies to `prompts` with a progress bar (rate, tokens used, ETA)."""
        if not prompts:
            return []
        usage = self.result.usage
        task = self.bar.add_task(kind, total=len(prompts), unit="request")
        return self.client.map(
            prompts,
            on_done=lambda: self.bar.update(
                task, advance=1, description=f"{kind} · {usage.tokens} tokens"
            ),
        )

    def provenance(self, kind: str) -> dict[str, str]:
        overridden = self.config.prompts is not None and kind != "answer"
        return {
            "endpoint": self.endpoint_label,
            "model": self.config.model,
            "prompt": f"file:{self.config.prompts}" if overridden else PROMPT_VERSIONS[kind],
        }


def augment_data(
    config: AugmentConfig,
    data_config: DataConfig,
    prepared: Path,
    out_dir: Path,
    *,
    console: Console | None = None,
) -> AugmentResult:
    """Write `prepared` plus what the endpoint generated (and we accepted) to `out_dir`."""
    splits = _read_prepared(prepared)
    if config.endpoint is None:
        from astra_tune.serve.process import local_server

        if console is not None:
            console.print(f"starting astra serve -m {config.model} on 127.0.0.1 for this job")
        with local_server(config.model) as (url, name):
            served = config.model_copy(update={"endpoint": url, "model": name})
            return _augment(served, data_config, splits, prepared, out_dir, console,
                            label=f"astra serve -m {config.model}")  # fmt: skip
    return _augment(config, data_config, splits, prepared, out_dir, console,
                    label=config.endpoint)  # fmt: skip


def _augment(
    config: AugmentConfig,
    data_config: DataConfig,
    splits: dict[str, list[Record]],
    prepared: Path,
    out_dir: Path,
    console: Console | None,
    *,
    label: str,
) -> AugmentResult:
    from astra_tune.progress import progress_bar

    result = AugmentResult(out_dir=out_dir, counts={})
    client = AugmentClient(config, result.usage)
    with progress_bar(console=console) as bar:
        run = _Run(config, data_config, load_prompts(config), client, result, splits, bar, label)
        # Answers first, so the later kinds see every conversation complete; questions
        # from docs before paraphrases, so generated questions get rewordings too.
        if config.answers:
            splits["train"] = _answer(run, splits["train"])
        if config.questions_from_docs:
            splits["train"] = splits["train"] + _questions_from_docs(run, splits["train"])
        if config.paraphrase:
            splits["train"] = splits["train"] + _paraphrases(run, splits["train"])
        if config.negatives:
            splits["train"] = _negatives(run, splits["train"])
    result.stopped_by_budget = client.stopped_by_budget
    result.counts = {name: len(records) for name, records in splits.items()}
    _write(out_dir, prepared, splits, result, config)
    return result


def _answer(run: _Run, records: list[Record]) -> list[Record]:
    """Each conversation that ends in a user turn, completed by the endpoint's model."""
    waiting = [i for i, r in enumerate(records) if _awaits_answer(r)]
    replies = run.ask("answers", [records[i]["messages"] for i in waiting])
    answered = dict(zip(waiting, replies, strict=True))
    out = []
    for index, record in enumerate(records):
        if index not in answered:
            out.append(record)
            continue
        reply = (answered[index] or "").strip()
        if answered[index] is None:
            continue  # not sent (token budget): an unanswered prompt cannot be trained on
        run.result.generated["answers"] += 1
        if not reply:
            run.result.rejected[REJECT_NO_ANSWER] += 1
            continue
        run.result.accepted["answers"] += 1
        messages = [*record["messages"], {"role": "assistant", "content": reply}]
        out.append({**record, "messages": messages, "augmented_by": run.provenance("answer")})
    return out


def _awaits_answer(record: Record) -> bool:
    messages = record.get("messages") or []
    return bool(messages) and messages[-1].get("role") == "user"


def _questions_from_docs(run: _Run, records: list[Record]) -> list[Record]:
    """Questions for each fact of the training text records and long FAQ answers, the fact
    itself as the answer (grounded by construction), `questions_per_fact` draws each."""
    from astra_tune.data.augment_client import Draw
    from astra_tune.data.dedup import exact_key
    from astra_tune.data.doc_questions import (
        REJECT_NO_QUESTION,
        answer_passages,
        common_words,
        facts_of,
        gives_away,
        off_topic,
        parse_question,
        passages,
    )

    found: list[tuple[Passage, Fact]] = []
    for record in records:
        source = str(record.get("source", "?"))
        if "text" in record:
            chunks = passages(record["text"], source)
        elif _from_document(record) and (question := _question(record)) is not None:
            chunks = answer_passages(question, str(record["messages"][-1]["content"]), source)
        else:
            continue
        heading = ""
        for passage in chunks:
            facts = facts_of(passage.text, heading)
            found += [(passage, fact) for fact in facts]
            heading = facts[-1].heading if facts else heading
    common = common_words([fact for _, fact in found])
    template = run.prompts["questions"]
    draws = run.config.questions_per_fact
    asks = [Draw(template.format(heading=fact.heading, fact=fact.text), draw)
            for _, fact in found for draw in range(draws)]  # fmt: skip
    replies = run.ask("questions", asks)
    candidates: list[tuple[Record, str]] = []
    seen: set[bytes] = set()
    for index, reply in enumerate(replies):
        if reply is None:
            continue
        passage, fact = found[index // draws]
        run.result.generated["questions"] += 1
        question = parse_question(reply)
        problem = None
        if question is None or not _asks(question):
            problem = REJECT_NO_QUESTION
        elif gives_away(question, fact.text):
            problem = REJECT_GIVES_AWAY
        elif off_topic(question, fact.text, common):
            problem = REJECT_OFF_TOPIC
        elif exact_key(question) in seen:
            problem = REJECT_DUPLICATE
        if problem is not None:
            run.result.rejected[problem] += 1
            continue
        assert question is not None
        seen.add(exact_key(question))
        messages = [{"role": "user", "content": question},
                    {"role": "assistant", "content": fact.text}]  # fmt: skip
        if run.data_config.system_prompt:
            messages.insert(0, {"role": "system", "content": run.data_config.system_prompt})
        record = {"messages": messages, "source": passage.source, "passage": passage.text,
                  "augmented_by": run.provenance("questions")}  # fmt: skip
        candidates.append((record, question))
    kept = _drop_held_out(candidates, run)
    run.result.accepted["questions"] += len(kept)
    return kept


def _paraphrases(run: _Run, records: list[Record]) -> list[Record]:
    """Accepted rewordings of each single-question training record, answers kept."""
    questions = [(r, q) for r in records if (q := _question(r))]
    template = run.prompts["paraphrase"]
    n = run.config.paraphrase
    replies = run.ask("paraphrases", [template.format(n=n, question=q) for _, q in questions])
    candidates: list[tuple[Record, str]] = []
    for (original, question), reply in zip(questions, replies, strict=True):
        if reply is None:
            continue  # not sent: the token budget ran out first
        accepted = _accept(question, _lines(reply), run.result)
        if len(accepted) > n:
            run.result.rejected[REJECT_EXTRA] += len(accepted) - n
        for text in accepted[:n]:
            candidates.append((_reworded(original, text, run), text))
    kept = _drop_held_out(candidates, run)
    run.result.accepted["paraphrases"] += len(kept)
    return kept


def _negatives(run: _Run, records: list[Record]) -> list[Record]:
    """Single-question chat records turned into preference records with a wrong answer."""
    from astra_tune.data.dedup import exact_key
    from astra_tune.evaluate.facts import check_answer

    todo = [i for i, r in enumerate(records) if _question(r)]
    template = run.prompts["negative"]
    prompts = []
    for index in todo:
        messages = records[index]["messages"]
        prompts.append(template.format(question=_question(records[index]),
                                       answer=messages[-1]["content"]))  # fmt: skip
    replies = dict(zip(todo, run.ask("negatives", prompts), strict=True))
    out = []
    for index, record in enumerate(records):
        reply = replies.get(index)
        if reply is None:
            out.append(record)
            continue
        run.result.generated["negatives"] += 1
        messages = record["messages"]
        question, chosen = str(_question(record)), messages[-1]["content"]
        wrong = reply.strip().strip('"“”').strip()
        problem = None
        if not wrong or len(wrong) > 3 * len(chosen) + 40:
            problem = REJECT_EMPTY
        elif exact_key(wrong) == exact_key(chosen):
            problem = REJECT_SAME
        elif check_answer(wrong, chosen, question).recall == 100.0:
            problem = REJECT_RIGHT_ANSWER  # every key fact still right: not a negative
        if problem is not None:
            run.result.rejected[problem] += 1
            out.append(record)
            continue
        run.result.accepted["negatives"] += 1
        preference = {k: v for k, v in record.items() if k != "messages"}
        provenance = {**record.get("augmented_by", {}), "rejected": run.provenance("negative")}
        out.append({**preference, "prompt": messages[:-1], "chosen": chosen, "rejected": wrong,
                    "augmented_by": provenance})  # fmt: skip
    return out


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


def _from_document(record: Record) -> bool:
    """True for an FAQ record read from a document or a crawled page (not generated, and
    not a dataset row, whose long answers are no documentation)."""
    from astra_tune.data.rows import DOCUMENT_SUFFIXES

    if record.get("augmented_by"):
        return False
    location = re.sub(r"(?::\d+|#L\d+)$", "", str(record.get("source", "")))
    return location.startswith(("http://", "https://")) or location.lower().endswith(
        tuple(DOCUMENT_SUFFIXES)
    )


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
    if not _asks(text):
        return REJECT_NOT_ASKING
    if not _numbers(text) <= _numbers(question):
        return REJECT_NEW_NUMBER  # beside the kept answer, it would teach a wrong fact
    if exact_key(text) == exact_key(question):
        return REJECT_SAME
    if check_answer(text, question).recall not in (None, 100.0):
        return REJECT_TERMS
    return None


def _asks(text: str) -> bool:
    """A question ends with "?" or opens like a request ("Tell me ...")."""
    return text.endswith("?") or bool(_REQUEST.match(text))


def _accept(question: str, rewrites: list[str], result: AugmentResult) -> list[str]:
    """The acceptable rewordings, each once; the rest counted by reason."""
    from astra_tune.data.dedup import exact_key

    seen: set[bytes] = set()
    kept = []
    for text in rewrites:
        result.generated["paraphrases"] += 1
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


def _drop_held_out(candidates: list[tuple[Record, str]], run: _Run) -> list[Record]:
    """Generated records whose question is close to a val/test question would leak it."""
    from astra_tune.data.formats import prompt_text
    from astra_tune.data.split import contaminated

    threshold = run.data_config.split.contamination_threshold
    held_out = [prompt_text(r) for name in ("val", "test") for r in run.splits[name]]
    if threshold is None or not held_out or not candidates:
        return [record for record, _ in candidates]
    # Held-out questions indexed, every candidate looked up: each one close to any of them.
    hits = contaminated(
        held_out,
        [question for _, question in candidates],
        threshold=threshold,
        num_perm=run.data_config.dedup.num_perm,
        shingle_words=run.data_config.dedup.shingle_words,
    )
    leaking = {candidate for candidate, _, _ in hits}
    if leaking:
        run.result.rejected[REJECT_HELD_OUT] += len(leaking)
    return [record for i, (record, _) in enumerate(candidates) if i not in leaking]


def _reworded(original: Record, question: str, run: _Run) -> Record:
    messages = [dict(m) for m in original["messages"]]
    user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[user]["content"] = question
    record: Record = {k: v for k, v in original.items() if k not in ("messages", "augmented_by")}
    record["messages"] = messages
    record.setdefault("source", "?")
    # A rewording of a generated question keeps the question's provenance beside its own.
    record["augmented_by"] = run.provenance("paraphrase")
    if "augmented_by" in original:
        record["augmented_by"]["from"] = original["augmented_by"]
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
