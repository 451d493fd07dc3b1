"""Every request and response body of `/v1/*` (OpenAI) and `/api/*` (Ollama), typed once.

The model is Ollama's `api/types.go`: one place that says what each body holds, with
"unset" (`None`) kept apart from `false`/`0`, so a router can tell "the client said
stream: false" from "the client said nothing" and apply the API's own default. Routers
validate bodies against these types before anything runs; a mismatch is a 400 in the
API's own envelope that names the field (see `serve/errors.py`), never a 422 or a 500.

Types are strict where the wire is: `max_tokens: "10"` or `true` is an error, as in
OpenAI's API, not a number. Unknown fields are ignored, as Ollama's Go decoder and
llama.cpp's server do; clients such as LangChain send vendor fields freely.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_serializer,
    model_validator,
)

from astra_tune.ollama.modelfile import ModelfileError, parse_parameter


def _no_lone_surrogates(text: str) -> str:
    # JSON's \ud800 escapes decode to a str that cannot be encoded as UTF-8: refused here
    # rather than failing in the tokenizer half-way through a request.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains an unpaired UTF-16 surrogate at position {exc.start}; "
            "send valid Unicode text"
        ) from None
    return text


Text = Annotated[StrictStr, AfterValidator(_no_lone_surrogates)]
NonEmptyText = Annotated[StrictStr, Field(min_length=1), AfterValidator(_no_lone_surrogates)]


def _finite(value: Any) -> Any:
    # Python's JSON reader accepts NaN and Infinity; checked first so the message says so.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")
    return value


Number = Annotated[StrictFloat | StrictInt, BeforeValidator(_finite)]
Temperature = Annotated[Number, Field(ge=0, le=2)]
TopP = Annotated[Number, Field(gt=0, le=1)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class Wire(BaseModel):
    """A request body: unknown fields ignored, known ones checked strictly."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Body(BaseModel):
    """A response body."""

    model_config = ConfigDict(populate_by_name=True)


# -- OpenAI: requests ----------------------------------------------------------------------


class ContentPart(Wire):
    """One part of a message's content; only text parts are served (the models read text)."""

    type: Text
    text: Text | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type != "text":
            raise ValueError(
                f"content parts of type {self.type!r} are not supported: the served models "
                'read text only; send {"type": "text", "text": ...} parts'
            )
        if self.text is None:
            raise ValueError("a text part needs 'text'")
        return self


class ChatMessage(Wire):
    """One message of the conversation."""

    # "developer" is OpenAI's newer name for "system", "function" its older one for "tool";
    # the router maps both.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Text | list[ContentPart] | None = None
    name: Text | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class StreamOptions(Wire):
    include_usage: StrictBool | None = None


class ResponseFormat(Wire):
    """`text` or `json_object` (through llama.cpp's JSON grammar)."""

    type: Literal["text", "json_object"]


def _one_choice(value: int | None) -> int | None:
    if value is not None and value != 1:
        raise ValueError(f"only n=1 is supported, not {value}")
    return value


def _token_ids(bias: dict[str, float] | None) -> dict[str, float] | None:
    for key in bias or {}:
        if not re.fullmatch(r"[0-9]{1,9}", key):
            raise ValueError(f"keys are token ids (strings of digits), not {key!r}")
    return bias


Stop = Text | list[Text]
LogitBias = Annotated[
    dict[str, Annotated[Number, Field(ge=-100, le=100)]],
    AfterValidator(_token_ids),
]
Choices = Annotated[StrictInt, AfterValidator(_one_choice)]


class SamplingFields(Wire):
    """Fields the chat and legacy completion requests share."""

    model: NonEmptyText
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: StrictInt | None = None
    stop: Stop | None = None
    n: Choices | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    logit_bias: LogitBias | None = None
    user: Text | None = None
    # OpenAI's newer name for a stable end-user id; either one assigns experiment arms.
    safety_identifier: Text | None = None

    def unit_id(self) -> str | None:
        return self.safety_identifier or self.user

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_bias(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in (self.logit_bias or {}).items()}


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(SamplingFields):
    """POST /v1/completions: a plain prompt, no chat template."""

    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)]
    echo: StrictBool | None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("echo is not supported; send echo: false or leave it out")
        return value

    def text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt


class EmbeddingRequest(Wire):
    """POST /v1/embeddings."""

    model: NonEmptyText
    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] | None = None
    user: Text | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


# -- OpenAI: responses ---------------------------------------------------------------------


class PromptTokensDetails(Body):
    cached_tokens: int = 0  # prompt tokens reused from the KV cache, not evaluated again


class Usage(Body):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class AssistantMessage(Body):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(Body):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(Body):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class _OmitsNone(Body):
    """A streamed event: fields named in `omit_none` are left out while `None`, as OpenAI
    leaves them out (`usage` until the last event, `role` after the first delta)."""

    omit_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in self.omit_none}


class Delta(_OmitsNone):
    omit_none = ("role", "content")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(Body):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(_OmitsNone):
    """One `data:` event of a streamed chat completion (the last may carry only usage)."""

    omit_none = ("usage",)

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(Body):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(Body):
    """A whole legacy completion."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunk(_OmitsNone, Completion):
    """One `data:` event of a streamed legacy completion."""

    omit_none = ("usage",)


class Embedding(Body):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 on request


class EmbeddingUsage(Body):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Body):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelCard(Body):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "astra-tune"


class ModelList(Body):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(Body):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(Body):
    """Every non-2xx answer under /v1."""

    error: OpenAIErrorDetail


# -- Ollama: requests ----------------------------------------------------------------------


def _checked_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Options checked by name and type as Ollama's server checks them (Modelfile names)."""
    if options is None:
        return None
    checked: dict[str, Any] = {}
    for name, value in options.items():
        try:
            parsed = parse_parameter(name, value, f"options.{name}", "option")
        except ModelfileError as exc:
            raise ValueError(exc.what + (f" ({exc.fix})" if exc.fix else "")) from None
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ValueError(f"option {name} must be a finite number, not {value!r}")
        if isinstance(parsed, list):
            parsed = [_no_lone_surrogates(item) for item in parsed]
        checked[name.lower()] = parsed
    return checked


Options = Annotated[dict[str, Any], AfterValidator(_checked_options)]
# "json", or a JSON schema for structured outputs (not served yet: refused by the router).
Format = Literal["json", ""] | dict[str, Any]
KeepAlive = StrictStr | StrictInt | StrictFloat


def _no_images(images: list[str]) -> list[str]:
    if images:
        raise ValueError("images are not supported: the served models read text only")
    return images


Images = Annotated[list[StrictStr], AfterValidator(_no_images)]


class OllamaMessage(Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text | None = None  # null reads as "", as Go's decoder leaves it empty
    images: Images | None = None


class ChatRequest(Wire):
    """POST /api/chat."""

    model: NonEmptyText
    messages: list[OllamaMessage] | None = None
    format: Format | None = None
    options: Options | None = None
    stream: StrictBool | None = None
    keep_alive: KeepAlive | None = None


class GenerateRequest(Wire):
    """POST /api/generate."""

    model: NonEmptyText
    prompt: Text | None = None
    system: Text | None = None
    raw: StrictBool | None = None
    format: Format | None = None
    options: Options | None = None
    stream: StrictBool | None = None
    keep_alive: KeepAlive | None = None
    images: Images | None = None


class EmbedRequest(Wire):
    """POST /api/embed."""

    model: NonEmptyText
    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    truncate: StrictBool | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class NamedRequest(Wire):
    """A body that names one model as `model` (or the older `name`)."""

    model: Text | None = None
    name: Text | None = None

    @model_validator(mode="after")
    def _named(self) -> NamedRequest:
        if not (self.model or self.name):
            raise ValueError("'model' is required")
        return self

    @property
    def target(self) -> str:
        return self.model or self.name or ""


class ShowRequest(NamedRequest):
    """POST /api/show."""

    verbose: StrictBool | None = None


class DeleteRequest(NamedRequest):
    """DELETE /api/delete."""


class CopyRequest(Wire):
    """POST /api/copy."""

    source: NonEmptyText
    destination: NonEmptyText


DIGEST_PATTERN = r"^sha256[:-][0-9a-f]{64}$"  # Ollama writes sha256:… and sha256-…
Digest = Annotated[StrictStr, Field(pattern=DIGEST_PATTERN)]


class CreateRequest(NamedRequest):
    """POST /api/create: a model from uploaded blobs or from a served model."""

    from_: NonEmptyText | None = Field(None, alias="from")
    files: dict[NonEmptyText, Digest] | None = None
    adapters: dict[NonEmptyText, Digest] | None = None
    template: Text | None = None
    system: Text | None = None
    license: Text | list[Text] | None = None
    parameters: Options | None = None
    messages: list[OllamaMessage] | None = None
    quantize: NonEmptyText | None = None
    stream: StrictBool | None = None

    @field_validator("messages")
    @classmethod
    def _no_messages(cls, messages: list[OllamaMessage] | None) -> list[OllamaMessage] | None:
        if messages:
            raise ValueError(
                "create does not store seed messages; put the behaviour in 'system' instead"
            )
        return messages

    def license_text(self) -> str | None:
        if isinstance(self.license, list):
            return "\n".join(self.license)
        return self.license


# -- Ollama: responses ---------------------------------------------------------------------


class ModelDetails(Body):
    parent_model: str = ""
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class ListModel(Body):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class ListResponse(Body):
    """GET /api/tags."""

    models: list[ListModel]


class RunningModel(ListModel):
    expires_at: str
    size_vram: int = 0


class ProcessResponse(Body):
    """GET /api/ps."""

    models: list[RunningModel]


class VersionResponse(Body):
    version: str


class ShowResponse(Body):
    """POST /api/show."""

    modelfile: str
    parameters: str
    template: str
    system: str = ""
    license: str = ""
    details: ModelDetails
    model_info: dict[str, Any]
    modified_at: str | None = None


class Message(Body):
    role: Literal["assistant"] = "assistant"
    content: str


class Timings(Body):
    """What a finished Ollama answer reports (durations in nanoseconds)."""

    model: str
    created_at: str
    done: bool
    done_reason: Literal["stop", "length", "load"] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(Timings):
    """POST /api/chat: the whole answer, or one NDJSON line of a stream."""

    message: Message


class GenerateResponse(Timings):
    """POST /api/generate: the whole answer, or one NDJSON line of a stream."""

    response: str


class LoadResponse(Timings):
    """/api/chat or /api/generate with nothing to say: the model is loaded."""

    response: str = ""
    message: Message


class EmbedResponse(Body):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class StatusResponse(Body):
    """One line of /api/create's progress."""

    status: str


class OllamaError(Body):
    """Every non-2xx answer under /api."""

    error: str


# -- feedback (ours, on both APIs' answers) -------------------------------------------------


class FeedbackRequest(Wire):
    """POST /v1/feedback: a thumbs rating of one answer, or a vote between two."""

    response_id: NonEmptyText | None = None
    rating: Literal[1, -1] | None = None
    reason: Annotated[Text, Field(max_length=200)] | None = None
    comment: Text | None = None
    tags: list[Annotated[Text, Field(max_length=64)]] | None = None
    response_ids: Annotated[list[NonEmptyText], Field(min_length=2, max_length=2)] | None = None
    winner: Literal["a", "b", "tie", "both_bad"] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        if self.response_ids is not None:
            if self.winner is None:
                raise ValueError("a vote between response_ids needs winner: a, b, tie or both_bad")
            if self.response_id is not None or self.rating is not None:
                raise ValueError("send either response_id + rating, or response_ids + winner")
        elif self.response_id is None or self.rating is None:
            raise ValueError("send response_id with rating 1 or -1 (or response_ids + winner)")
        return self


class FeedbackResponse(Body):
    """What a rating or vote stored."""

    response_id: str | None = None
    rating: int | None = None
    vote_id: int | None = None
    experiment: str | None = None
    arm: str | None = None
    version: str | None = None
    created: bool
