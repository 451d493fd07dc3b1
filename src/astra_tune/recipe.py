"""The run recipe: the one place where every option, its default and its meaning live.

A recipe is a YAML file validated by the `Recipe` model below. Later stages add their own
sections as nested models. Loading reports every problem at once, each with its field
path and file:line, and suggests the closest valid key for a misspelled one.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined

from astra_tune.errors import AstraError, ConfigError, Problem
from astra_tune.models.catalog import DEFAULT_MODEL
from astra_tune.source_paths import source_path
from astra_tune.yaml_lines import YamlDocument, load_yaml, require_mapping


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


RunName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Run name (letters, digits, '.', '_', '-'); names the run directory.",
    ),
]


FormatName = Literal[
    "auto", "alpaca", "dolly", "sharegpt", "openai", "prompt_completion", "text", "preference"
]


class CrawlConfig(Section):
    """How a URL source is crawled: same site, under the start URL's directory."""

    max_pages: int = Field(50, ge=1, le=10_000, description="Pages to read at most.")
    max_depth: int = Field(3, ge=0, le=20, description="Links to follow from the start page.")
    delay_s: float = Field(
        1.0, ge=0, description="Pause between requests (robots.txt Crawl-delay wins if longer)."
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout per request.")
    refresh: bool = Field(
        False, description="Fetch again instead of reading pages cached by an earlier crawl."
    )


class SourceConfig(Section):
    """One data source and how to read it."""

    path: str = Field(
        description="A file (.jsonl .json .csv .tsv .parquet .md .html .txt), a directory "
        "(documents or a datasets save_to_disk), 'builtin:NAME', a hub dataset id org/name, "
        "or an http(s) URL of docs to crawl."
    )
    format: FormatName = Field("auto", description="Record format; 'auto' detects it per file.")
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field -> source column, e.g. {instruction: question}.",
    )
    split: str = Field("train", description="Hub datasets: which split to load.")
    subset: str | None = Field(None, description="Hub datasets: the configuration (subset) name.")
    revision: str | None = Field(None, description="Hub datasets: branch, tag or commit.")
    assign_to: Literal["train", "val", "test"] | None = Field(
        None,
        description="Put every record of this source in this split; a split that gets a "
        "pinned source takes no share of the other records.",
    )
    crawl: CrawlConfig = Field(
        default_factory=CrawlConfig, description="URL sources: how far and how fast to crawl."
    )
    repeat: int = Field(
        1,
        ge=1,
        le=100,
        description="Times each training record of this source is written to train.jsonl "
        "(upsampling a small or dense source, after deduplication and splitting).",
    )

    @field_validator("path")
    @classmethod
    def _path_next_to_recipe(cls, value: str, info: ValidationInfo) -> str:
        return source_path(value, _base_dir(info))


def _base_dir(info: ValidationInfo) -> Path | None:
    """The directory of the recipe file being validated (None: not from a file)."""
    return (info.context or {}).get("base_dir")


def _next_to_recipe(value: str | None, info: ValidationInfo) -> str | None:
    # A recipe file's relative paths mean "next to this file", wherever it is run from.
    base_dir = _base_dir(info)
    if value is None or base_dir is None or Path(value).expanduser().is_absolute():
        return value
    return str(Path(base_dir) / value)


class CleanConfig(Section):
    """Text cleaning; on by default because it never changes meaning."""

    unicode_nfc: bool = Field(True, description="Normalize Unicode to NFC.")
    strip_control_chars: bool = Field(
        True, description="Remove control and zero-width characters (tabs and newlines stay)."
    )
    normalize_whitespace: bool = Field(
        True,
        description="Unify line endings and odd spaces, trim trailing spaces; indentation stays.",
    )
    strip_urls: bool = Field(False, description="Remove http(s) URLs from all text.")


class FilterConfig(Section):
    """Which examples to drop. Defaults drop only empty, broken and garbage examples."""

    min_response_chars: int = Field(1, ge=0, description="Drop answers shorter than this.")
    max_response_chars: int | None = Field(None, ge=1, description="Drop answers longer than this.")
    min_response_tokens: int | None = Field(
        None, ge=0, description="Drop answers with fewer base-model tokens."
    )
    max_response_tokens: int | None = Field(
        None, ge=1, description="Drop answers with more base-model tokens."
    )
    languages: list[str] | None = Field(
        None, description="Keep only these ISO 639-1 languages (e.g. [en, fr]); null keeps all."
    )
    language_confidence: float = Field(
        0.9, ge=0, le=1, description="Drop for language only when the detector is this sure."
    )
    language_min_chars: int = Field(
        40, ge=0, description="Texts shorter than this are never dropped for language."
    )
    max_char_run: int | None = Field(
        100, ge=2, description="Drop text with a run of one non-space character this long."
    )
    min_alpha_ratio: float = Field(
        0.1, ge=0, le=1, description="Drop text whose share of letters is below this."
    )
    alpha_min_chars: int = Field(
        32, ge=0, description="Texts shorter than this skip the letter-share check."
    )


class DedupConfig(Section):
    """Duplicate removal; the first occurrence is kept."""

    exact: bool = Field(True, description="Drop records identical after case/space folding.")
    near: bool = Field(True, description="Drop near-duplicates (MinHash LSH on word shingles).")
    near_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity at which two records are near-duplicates."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    shingle_words: int = Field(3, ge=1, le=10, description="Words per shingle.")


class SplitConfig(Section):
    """Train/val/test split and the contamination check."""

    val: float = Field(0.05, ge=0, lt=1, description="Share of records for validation.")
    test: float = Field(0.05, ge=0, lt=1, description="Share of records for test.")
    stratify: Literal["auto", "category", "source", "none"] = Field(
        "auto",
        description="Keep proportions per category or per source file; auto picks category "
        "when records have one, else source when there are several.",
    )
    contamination_threshold: float | None = Field(
        0.8,
        gt=0,
        le=1,
        description="Remove val/test records whose prompt is this similar (Jaccard) to a "
        "training prompt; null disables.",
    )

    # On the split itself, not on the data section: then it is checked (and reported)
    # alongside every other problem of the recipe, not only once the others are fixed.
    @model_validator(mode="after")
    def _check_sum(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError("split.val + split.test must leave records for training (sum < 1)")
        return self


class AugmentConfig(Section):
    """Augmentation through an OpenAI-compatible endpoint (`astra data augment`)."""

    endpoint: str | None = Field(
        None,
        description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; unset: a "
        "private `astra serve` of `model` on loopback for the length of the job.",
    )
    model: str = Field(
        ...,
        description="The model name the endpoint serves; without an endpoint, a registry "
        "name, a .gguf file or the bundled default (smollm2-135m-instruct).",
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the endpoint's API key (none: no key)."
    )
    paraphrase: int = Field(
        3, ge=0, le=20, description="Rewordings asked for per training question (answer kept)."
    )
    answers: bool = Field(
        False,
        description="A teacher answer for each training conversation that ends in a user turn "
        "(sequence-level distillation).",
    )
    questions_from_docs: bool = Field(
        False,
        description="Question/answer pairs grounded in each training text record (documents), "
        "the passage kept with them.",
    )
    questions_per_fact: int = Field(
        2,
        ge=1,
        le=10,
        description="Questions asked for per fact of a passage, each its own draw "
        "(questions_from_docs).",
    )
    negatives: bool = Field(
        False,
        description="A plausible wrong answer for each training question, written as "
        "`rejected`: preference data for DPO.",
    )
    temperature: float = Field(0.9, ge=0, le=2, description="Sampling temperature of requests.")
    seed: int = Field(
        0, ge=0, description="Seed sent with each request: the same replies where it is honoured."
    )
    max_tokens: int = Field(256, ge=16, description="Longest reply per request, in tokens.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once.")
    max_cost_tokens: int | None = Field(
        None, ge=1, description="Stop sending requests once this many tokens were used."
    )
    prompts: str | None = Field(
        None, description="YAML file overriding the prompt templates (see --show-prompts)."
    )

    _relative_to_recipe = field_validator("prompts")(_next_to_recipe)


class DataConfig(Section):
    """Data preparation (`astra data prepare`)."""

    sources: list[SourceConfig] = Field(
        default_factory=list, description="Data sources; a plain string is a path."
    )
    format: FormatName = Field("auto", description="Default format for sources that set none.")
    mapping: dict[str, str] = Field(
        default_factory=dict, description="Default column mapping for sources that set none."
    )
    system_prompt: str | None = Field(
        None, description="System turn added to chat records that have none."
    )
    skip_bad_lines: bool = Field(
        False, description="Skip (and count) malformed lines instead of failing."
    )
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning.")
    filters: FilterConfig = Field(default_factory=FilterConfig, description="Example filters.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Deduplication.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Splitting.")
    augment: AugmentConfig | None = Field(
        None, description="Augmentation through an OpenAI-compatible model (`astra data augment`)."
    )

    @field_validator("sources", mode="before")
    @classmethod
    def _paths_as_sources(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": item} if isinstance(item, str) else item for item in value]
        return value


class LoraConfig(Section):
    """LoRA adapter shape (PEFT)."""

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(
        32, ge=1, description="Scaling numerator (scale = alpha / r, or / sqrt(r) with rsLoRA)."
    )
    # 0 as in Unsloth: on CPUs drawing the dropout masks cost a quarter of a LoRA step
    # (bench/train_bench.py), for a regularizer short fine-tunes rarely need.
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or all-linear (every linear but the head).",
    )
    use_rslora: bool = Field(False, description="Rank-stabilized scaling alpha / sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class QloraConfig(Section):
    """4-bit base model for QLoRA (bitsandbytes)."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Also quantize the quantization constants.")


class TrainConfig(Section):
    """Fine-tuning (`astra train`)."""

    method: Literal["lora", "qlora", "full"] = Field("lora", description="What to train.")
    data_dir: str | None = Field(
        None,
        description="Prepared data directory; unset: prepare data.sources into RUN/prepared.",
    )
    output_dir: str | None = Field(None, description="Run directory; unset: $ASTRA_HOME/runs/NAME.")
    max_seq_len: int = Field(1024, ge=16, description="Longest sequence (tokens) trained on.")
    packing: bool = Field(
        True, description="Pack examples into shared rows (attention kept per example)."
    )
    train_on_prompt: bool = Field(
        False, description="Also train on prompt tokens (default: assistant turns only)."
    )
    truncate_ok: bool = Field(
        False, description="Accept examples whose answer is cut at max_seq_len."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Training dtype; auto picks from the hardware (see astra doctor)."
    )
    epochs: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="Passes over the training data; auto: 3, more for small data (at least "
        "200 steps, at most 40 passes), fewer past 25,000 examples.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many steps (overrides epochs)."
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Time budget: steps (at most epochs/max_steps) and the schedule are "
        "fitted to the speed measured in the first steps.",
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Rows per step per device; auto: 1 per 128 rows, at most 8, so small "
        "data still makes many updates per pass.",
    )
    grad_accum: int = Field(1, ge=1, description="Steps to accumulate before an optimizer update.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in backward: far less memory for long rows and "
        "large models, about a third more compute.",
    )
    eval_steps: int | None = Field(
        50, ge=1, description="Validate every N steps; null: only at the end."
    )
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(
        2, ge=1, description="Checkpoints to keep (the best is kept too)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many validations without improvement."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Smallest drop in validation loss that counts as improvement."
    )
    logging_steps: int = Field(1, ge=1, description="Log metrics every N steps.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="Experiment trackers (must be installed)."
    )

    _relative_to_recipe = field_validator("output_dir", "data_dir")(_next_to_recipe)

    @field_validator("epochs", "batch_size", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any, info: ValidationInfo) -> Any:
        # One clear message instead of one per branch of the union.
        whole = info.field_name == "batch_size"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value == "auto" or (number and value > 0 and (not whole or value == int(value))):
            return int(value) if whole and number else value
        raise ValueError(
            f"must be {'a whole number of at least 1' if whole else 'a number above 0'} "
            "or auto (sized from the data)"
        )

    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (lora, qlora).")
    qlora: QloraConfig = Field(default_factory=QloraConfig, description="4-bit settings (qlora).")


class ExportConfig(Section):
    """GGUF export (`astra export`)."""

    quant: list[str] | None = Field(
        None,
        description="GGUF types: f32, f16, bf16, q8_0 written directly; q4_k_m, q5_k_m, q6_k, "
        "q4_0, ... through llama.cpp's quantizer. Unset: f16, plus q8_0 and q4_k_m where "
        "they meet their verification targets for this model (dropped, and said so, where not).",
    )
    output_dir: str | None = Field(
        None, description="Where the files go; unset: RUN_DIR/export (or $ASTRA_HOME/exports)."
    )
    adapter_only: bool = Field(
        False,
        description="LoRA runs: write the adapter as a llama.cpp adapter GGUF next to base "
        "GGUFs instead of merging it.",
    )
    verify: bool = Field(
        True, description="Load every file in llama.cpp and compare it with the PyTorch model."
    )
    verify_positions: int = Field(
        512, ge=64, le=16384, description="Token positions compared (top-1 agreement, KL)."
    )
    tokenizer_pre: str | None = Field(
        None,
        description="llama.cpp pre-tokenizer name, when it cannot be detected (smollm, "
        "llama-bpe, qwen2, ...).",
    )

    _relative_to_recipe = field_validator("output_dir")(_next_to_recipe)

    @field_validator("quant")
    @classmethod
    def _check_quant(cls, value: list[str] | None) -> list[str] | None:
        from astra_tune.models.gguf_types import parse_types

        if value is None:
            return None
        try:
            return parse_types(value)
        except AstraError as exc:
            raise ValueError(f"{exc.what}" + (f"; {exc.fix}" if exc.fix else "")) from exc


MetricName = Literal[
    "facts", "perplexity", "nll", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "f1"
]


DEFAULT_METRICS = (
    "facts", "perplexity", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "f1"
)  # fmt: skip


class JudgeConfig(Section):
    """An LLM judge: any OpenAI-compatible endpoint compares two answers."""

    base_url: str = Field(..., description="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    model: str = Field(..., description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (none: no key)."
    )
    max_examples: int | None = Field(
        None, ge=1, description="Judge at most this many examples (each twice, swapped)."
    )


class EvalConfig(Section):
    """Evaluation on held-out chat records: the last assistant turn is the reference."""

    metrics: list[MetricName] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        description="Metrics to compute: facts (recall of the reference's numbers, names "
        "and quoted terms), perplexity and nll (teacher-forced), the rest score wording.",
    )
    samples: int | None = Field(
        None, ge=1, description="Evaluate at most this many records (the first N); unset: all."
    )
    max_new_tokens: int = Field(128, ge=1, description="Longest generated answer, in tokens.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy.")
    batch_size: int = Field(8, ge=1, description="Prompts generated together (transformers).")
    bootstrap: int = Field(
        1000, ge=100, description="Bootstrap resamples for the 95% confidence intervals."
    )
    after_training: bool = Field(
        False, description="Evaluate the run against its base on the test split after training."
    )
    judge: JudgeConfig | None = Field(None, description="Optional pairwise LLM judge.")


class RegistryConfig(Section):
    """Where `astra run` stores the exported model."""

    push: bool = Field(True, description="Push the exported GGUFs as a new registry version.")
    name: str | None = Field(None, description="Registry model name; unset: the recipe's name.")
    aliases: list[str] = Field(
        default_factory=list, description="Aliases to point at the new version, e.g. staging."
    )


class Recipe(Section):
    """A fine-tuning run, from base model to exported model."""

    name: RunName
    base_model: str = Field(
        DEFAULT_MODEL,
        description="Base model: a catalog name (`astra models list`), a local HF directory, "
        "a .gguf file or a Hugging Face hub id.",
    )
    seed: int = Field(
        42, ge=0, description="Random seed for data order, weight initialisation and sampling."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Data preparation.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="GGUF export.")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="Registry push at the end of `astra run`."
    )

    @field_validator("base_model")
    @classmethod
    def _check_base_model(cls, value: str, info: ValidationInfo) -> str:
        # Imported here: the resolver pulls in huggingface_hub, which `recipe show` never needs.
        from astra_tune.models.resolve import normalize_spec

        try:
            return normalize_spec(value, base_dir=_base_dir(info))
        except AstraError as exc:
            # pydantic turns ValueError into a field error at this path; keep our fix text.
            raise ValueError(f"{exc.what}" + (f"; {exc.fix}" if exc.fix else "")) from exc


def describe(section: type[BaseModel], name: str, suffix: str = "") -> str:
    """A field's one-line description, for CLI help that sets the same option."""
    description = section.model_fields[name].description
    assert description, f"{section.__name__}.{name} has no description"
    return description + (f" {suffix}" if suffix else "")


def run_recipe(spec: str) -> Recipe | None:
    """The recipe a training run was made with, when `spec` is (inside) a run directory.

    None for anything else, and for a run whose recipe no longer validates: an old or
    hand-edited recipe should not block using the run's weights.
    """
    path = Path(spec).expanduser()
    for candidate in (path / "recipe.yaml", path.parent / "recipe.yaml"):
        if path.is_dir() and candidate.is_file() and (candidate.parent / "lineage.json").is_file():
            try:
                return load_recipe(candidate)
            except AstraError:
                return None
    return None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file; relative paths inside it are relative to the file.

    `overrides` are `dotted.key=value` strings (values parsed as YAML), applied first.
    """
    doc = load_yaml(Path(path))
    data = require_mapping(doc)
    for item in overrides or []:
        _apply_override(data, item)
    return validate_recipe(data, doc)


def _apply_override(data: dict[str, Any], item: str) -> None:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {item!r} is not key=value", fix="write it like --set train.learning_rate=1e-4"
        )
    parts = key.strip().split(".")
    target = data
    for part in parts[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section", fix="check the key path")
        target = child
    try:
        target[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML", fix="quote it") from exc


def validate_recipe(
    data: dict[str, Any],
    doc: YamlDocument | None = None,
    extra: list[Problem] | None = None,
) -> Recipe:
    """Validate recipe data, raising one ConfigError that lists every problem: duplicate
    keys of the file, every invalid field, and `extra` problems the caller found."""
    base_dir = doc.path.parent.resolve() if doc else None
    problems = [*(doc.duplicates if doc else []), *(extra or [])]
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += [_to_problem(error, doc) for error in exc.errors()]
        raise _invalid(doc, problems) from exc
    if problems:
        raise _invalid(doc, problems)
    return recipe


def _invalid(doc: YamlDocument | None, problems: list[Problem]) -> ConfigError:
    source = doc.path.name if doc else "recipe"
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return ConfigError(
        f"{source} is not a valid recipe ({count})",
        problems=problems,
        fix="correct the fields above; `astra recipe show` lists every field and its default",
    )


def _to_problem(error: Any, doc: YamlDocument | None) -> Problem:
    loc = tuple(error["loc"])
    path = _format_path(loc)
    location = doc.location(loc) if doc else None
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        suggestion = _closest_field(loc)
        if suggestion:
            message += f" — did you mean {suggestion}?"
        else:
            valid = ", ".join(_model_at(loc[:-1]).model_fields) if _model_at(loc[:-1]) else ""
            message += f" (valid keys here: {valid})" if valid else ""
    elif error["type"] == "missing":
        message = "required field is missing"
        location = (
            doc.location(loc[:-1]) if doc and len(loc) > 1 else (str(doc.path) if doc else None)
        )
    else:
        message = error["msg"].removeprefix("Value error, ")  # pydantic's, not ours
        if "input" in error and not isinstance(error["input"], dict | list):
            message += f" (got {error['input']!r})"
    return Problem(path=path, message=message, location=location)


def _format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The section model that holds the fields at `loc` (None if it is not a model)."""
    model: type[BaseModel] = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _section_type(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _closest_field(loc: tuple[str | int, ...]) -> str | None:
    model = _model_at(loc[:-1])
    if model is None:
        return None
    matches = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    if not matches:
        return None
    return _format_path((*loc[:-1], matches[0]))


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as `Section`, `Section | None`, `list[Section]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class FieldDoc:
    """One recipe field as `astra recipe show` prints it."""

    path: str
    type: str
    default: str
    description: str


def describe_fields(
    model: type[BaseModel] = Recipe, prefix: str = "", required: str = "(required)"
) -> list[FieldDoc]:
    """Every field of the recipe, or of another settings model (recursing into sections,
    and into the entries of lists of sections as `path[].field`), with its default and
    description."""
    rows: list[FieldDoc] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section = _section_type(field.annotation)
        if section is not None and typing.get_origin(field.annotation) is not list:
            optional = type(None) in typing.get_args(field.annotation)
            if optional:
                rows.append(FieldDoc(path, f"{_type_name(section)} | None", "null",
                                     field.description or ""))  # fmt: skip
            rows.extend(
                describe_fields(
                    section, f"{path}.", f"(required when {path} is set)" if optional else required
                )
            )
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            default = required
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "null" if field.default is None else str(field.default)
        rows.append(FieldDoc(path, _type_name(field.annotation), default, field.description or ""))
        if section is not None:  # a list of sections: each entry's own fields
            rows.extend(describe_fields(section, f"{path}[].", f"(required in each {name} entry)"))
    return rows


def _type_name(annotation: Any) -> str:
    """A type as a recipe author reads it: `int | None`, `auto | alpaca | ...`, `list[source]`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__.removesuffix("Config").removesuffix("Settings").lower()
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
