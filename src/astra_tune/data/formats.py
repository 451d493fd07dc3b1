"""Detect what shape a source's rows have and convert them to canonical records.

Canonical records (docs/DESIGN.md, "Records"):
  chat        {"messages": [{"role", "content"}, ...]}
  preference  {"prompt": [messages...], "chosen": str, "rejected": str}
  text        {"text": str}
Each also carries "source" (file:line) and, where the source has one, "category".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from astra_tune.errors import DataError

Record = dict[str, Any]


@dataclass(frozen=True)
class Format:
    """A known source shape: the fields that identify it (any one of the alternatives)."""

    name: str
    required: tuple[frozenset[str], ...]
    description: str

    def matches(self, keys: set[str] | frozenset[str]) -> bool:
        return any(option <= keys for option in self.required)


# Column pairs read as one question and its answer, in the order they are tried.
QUESTION_ANSWER = (
    ("prompt", "completion"),
    ("prompt", "response"),
    ("question", "answer"),
    ("query", "response"),
    ("input", "output"),
)

# Order matters: the first match wins (dolly before alpaca, preference before prompt/*,
# alpaca's instruction + output before a bare input / output).
FORMATS: tuple[Format, ...] = (
    Format("preference", (frozenset({"chosen", "rejected"}),), "prompt / chosen / rejected"),
    Format("openai", (frozenset({"messages"}),), "messages: [{role, content}]"),
    Format("sharegpt", (frozenset({"conversations"}),), "conversations: [{from, value}]"),
    Format("dolly", (frozenset({"instruction", "response"}),), "instruction / context / response"),
    Format("alpaca", (frozenset({"instruction", "output"}),), "instruction / input / output"),
    Format(
        "prompt_completion",
        tuple(frozenset(pair) for pair in QUESTION_ANSWER),
        "prompt / completion (or prompt / response, question / answer, query / response, "
        "input / output)",
    ),
    Format("text", (frozenset({"text"}),), "text"),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)
_BY_NAME = {f.name: f for f in FORMATS}

SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
    "system": "system",
}  # fmt: skip
CHAT_ROLES = {"system", "user", "assistant"}


def known_formats() -> str:
    """One line listing every format and its fields, for error messages."""
    return "; ".join(f"{f.name} ({f.description})" for f in FORMATS)


def detect_format(keys: set[str] | frozenset[str]) -> str | None:
    """The first format whose identifying fields are all present, or None."""
    for fmt in FORMATS:
        if fmt.matches(keys):
            return fmt.name
    return None


# Column names that say which side of an example a column holds, for --map hints.
_ASKING = ("prompt", "question", "query", "instruction", "input", "q", "ask", "request",
           "user", "human", "problem", "source")  # fmt: skip
_ANSWERING = ("completion", "answer", "response", "output", "a", "reply", "assistant", "gpt",
              "solution", "target", "label")  # fmt: skip


def suggest_mapping(columns: Iterable[str], fmt: str | None = None) -> str:
    """Every `--map canonical=column` a row with these columns (in file order) needs to
    read as `fmt` (default: prompt / completion), guessed from the names; "" if no guess."""
    keys = set(columns)
    target = _BY_NAME[fmt if fmt is not None else "prompt_completion"]
    needed = min(target.required, key=lambda option: len(option - keys))
    fields = sorted(needed, key=lambda f: (f not in _ASKING, f))  # the question side first
    free = [k for k in dict.fromkeys(columns) if k not in fields]
    chosen: dict[str, str] = {}
    for field in fields:
        if field in keys or not free:
            continue
        side = _ASKING if field in _ASKING else _ANSWERING if field in _ANSWERING else ()
        column = next((c for c in free if _side_of(c) == side), None)
        if column is None:
            column = next((c for c in free if _side_of(c) is None), free[0])
        chosen[field] = column
        free.remove(column)
    missing = [f for f in fields if f not in keys and f not in chosen]
    if not chosen or missing:
        return ""
    return " ".join(f"--map {field}={column}" for field, column in chosen.items())


def _side_of(column: str) -> tuple[str, ...] | None:
    words = set(column.lower().replace("-", "_").split("_"))
    if words & set(_ASKING):
        return _ASKING
    if words & set(_ANSWERING):
        return _ANSWERING
    return None


def apply_mapping(row: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Rename source columns to canonical names: mapping is {canonical: column}."""
    if not mapping:
        return row
    renamed = dict(row)
    for canonical, column in mapping.items():
        if column in renamed:
            renamed[canonical] = renamed.pop(column)
    return renamed


class RowError(ValueError):
    """A row that has the right fields but unusable values; the caller adds file:line."""


def normalize(row: dict[str, Any], fmt: str) -> Record:
    """Convert one row of a known format to a canonical record (without `source`).

    A `category` field (dolly has one; any source may) is kept for stratified splits.
    """
    record = _NORMALIZERS[fmt](row)
    category = row.get("category")
    if category not in (None, ""):
        record["category"] = _text(category, "category")
    return record


def check_row(row: dict[str, Any], fmt: str, location: str, first: str | None) -> None:
    """Raise a DataError if `row` lacks the fields of the file's format.

    `first`: where the row that set the format by detection is; None when the format was
    given (--format, or the recipe's `format:`), which then is what the row contradicts.
    """
    if _BY_NAME[fmt].matches(row.keys()):
        return
    seen = ", ".join(sorted(row)) or "no fields"
    other = detect_format(set(row))
    looks = f"looks like {other}" if other else "matches no known format"
    if first is None:
        hint = suggest_mapping(row, fmt)
        rename = f"Rename columns: {hint}" if hint else "Rename columns with --map canonical=column"
        raise DataError(
            f"this row is not {fmt}, the format asked for: it {looks}",
            where=location,
            fix=f"fields seen: {seen}; {fmt} needs {_BY_NAME[fmt].description}. "
            + (f"Use --format {other}, or leave --format out to detect it"
               if other else rename),
        )  # fmt: skip
    raise DataError(
        f"mixed shapes: this row {looks}, but the file's first row ({first}) is {fmt}",
        where=location,
        fix=f"fields seen: {seen}. Known formats: {known_formats()}. "
        "Make every row the same shape, or split the file",
    )


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # OpenAI content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text")
    raise RowError(f"field {field!r} must be text, not {type(value).__name__}")


def _user_turn(instruction: str, extra: str) -> str:
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def _alpaca(row: dict[str, Any]) -> Record:
    user = _user_turn(
        _text(row.get("instruction"), "instruction"), _text(row.get("input"), "input")
    )
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": _text(row.get("output"), "output")}]  # fmt: skip
    if row.get("system"):
        messages.insert(0, {"role": "system", "content": _text(row["system"], "system")})
    return {"messages": messages}


def _dolly(row: dict[str, Any]) -> Record:
    user = _user_turn(
        _text(row.get("instruction"), "instruction"), _text(row.get("context"), "context")
    )
    return {
        "messages": [{"role": "user", "content": user},
                     {"role": "assistant", "content": _text(row.get("response"), "response")}]
    }  # fmt: skip


def _prompt_completion(row: dict[str, Any]) -> Record:
    question, answer = next(
        (pair for pair in QUESTION_ANSWER if pair[0] in row and pair[1] in row),
        QUESTION_ANSWER[0],
    )
    return {
        "messages": [{"role": "user", "content": _text(row.get(question), question)},
                     {"role": "assistant", "content": _text(row.get(answer), answer)}]
    }  # fmt: skip


def _openai(row: dict[str, Any]) -> Record:
    turns = row["messages"]
    if not isinstance(turns, list) or not turns:
        raise RowError("'messages' must be a non-empty list")
    messages = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn:
            raise RowError(f"messages[{number}] must be an object with 'role' and 'content'")
        role = str(turn["role"])
        if role not in CHAT_ROLES:
            raise RowError(
                f"messages[{number}].role is {role!r}; known roles: system, user, assistant"
            )
        messages.append(
            {"role": role, "content": _text(turn.get("content"), f"messages[{number}].content")}
        )
    return {"messages": messages}


def _sharegpt(row: dict[str, Any]) -> Record:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise RowError("'conversations' must be a non-empty list")
    messages = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn:
            raise RowError(f"conversations[{number}] must be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            known = ", ".join(sorted(SHAREGPT_ROLES))
            raise RowError(f"conversations[{number}].from is {turn['from']!r}; known: {known}")
        messages.append(
            {"role": role, "content": _text(turn.get("value"), f"conversations[{number}].value")}
        )
    return {"messages": messages}


def _preference(row: dict[str, Any]) -> Record:
    chosen, rejected = row["chosen"], row["rejected"]
    prompt = row.get("prompt")
    if isinstance(chosen, list):
        # Conversational pairs: the prompt is the conversation before the final answer.
        chosen_messages = _openai({"messages": chosen})["messages"]
        rejected_messages = (
            _openai({"messages": rejected})["messages"] if isinstance(rejected, list) else None
        )
        if prompt is None:
            prompt = chosen_messages[:-1]
        chosen = chosen_messages[-1]["content"]
        rejected = (
            rejected_messages[-1]["content"] if rejected_messages else _text(rejected, "rejected")
        )
    if isinstance(prompt, str) or prompt is None:
        prompt_messages = [{"role": "user", "content": _text(prompt, "prompt")}]
    else:
        prompt_messages = _openai({"messages": prompt})["messages"]
    return {
        "prompt": prompt_messages,
        "chosen": _text(chosen, "chosen"),
        "rejected": _text(rejected, "rejected"),
    }


def _text_record(row: dict[str, Any]) -> Record:
    return {"text": _text(row.get("text"), "text")}


_NORMALIZERS: dict[str, Callable[[dict[str, Any]], Record]] = {
    "alpaca": _alpaca,
    "dolly": _dolly,
    "prompt_completion": _prompt_completion,
    "openai": _openai,
    "sharegpt": _sharegpt,
    "preference": _preference,
    "text": _text_record,
}


def record_kind(record: Record) -> str:
    """'chat', 'preference' or 'text'."""
    if "messages" in record:
        return "chat"
    return "preference" if "chosen" in record else "text"


def prompt_text(record: Record) -> str:
    """What the model is asked (user turns), used for contamination checks."""
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")
    if "prompt" in record:
        return "\n".join(m["content"] for m in record["prompt"] if m["role"] == "user")
    return record["text"]


def response_text(record: Record) -> str:
    """What the model must produce (assistant turns, or the chosen answer)."""
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"] if m["role"] == "assistant")
    if "chosen" in record:
        return record["chosen"]
    return record["text"]


def training_messages(record: Record) -> list[dict[str, str]] | None:
    """The conversation training formats (preference: prompt + chosen); None for text."""
    if "messages" in record:
        return record["messages"]
    if "chosen" in record:
        return [*record["prompt"], {"role": "assistant", "content": record["chosen"]}]
    return None


def all_text(record: Record) -> str:
    """The words that make a record what it is, for deduplication.

    System turns are left out: a dataset often repeats one system prompt everywhere, and
    counting it would make unrelated short records look alike.
    """
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"] if m["role"] != "system")
    if "chosen" in record:
        return "\n".join([prompt_text(record), record["chosen"], record["rejected"]])
    return record["text"]
