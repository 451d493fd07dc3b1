"""The one exception hierarchy for problems a user can fix.

    AstraError                    a user-facing problem: what is wrong, where, how to fix it
     ├── ConfigError              a recipe or command-line option is invalid (many problems)
     ├── ModelError               a model cannot be found, downloaded, converted or loaded
     │    └── ModelNotServedError   serve/catalog.py: a request names a model not served
     ├── DataError                a data source cannot be read, or its records make no sense
     ├── DependencyError          a required package or system piece is missing
     ├── VerificationError        an output was written but failed its checks (exit 1)
     ├── RegistryError            registry/store.py: a registry operation cannot be done
     │    └── VersionNotFoundError  a name, version or alias the registry does not hold
     ├── BlobError                registry/blobs.py: a blob is missing or damaged
     ├── ExperimentError          experiments/store.py: an experiment cannot be made or changed
     │    ├── ExperimentNotFoundError  no experiment or arm has that name
     │    └── ResponseNotFoundError    experiments/feedback.py: feedback names an unknown answer
     ├── ModelfileError           ollama/modelfile.py: a Modelfile or parameter is invalid
     ├── TemplateError            ollama/gotemplate.py: a Go template does not parse or run
     ├── TranslationError         ollama/translate.py: a chat template has no faithful TEMPLATE
     ├── PushError                ollama/push.py: an Ollama server refused a push
     ├── ClientError              client.py: our HTTP client got an error answer
     ├── UpstreamError            serve/upstream.py: a forwarded request failed upstream
     ├── QueueFullError           serve/engine.py: a model's queue is full (429)
     ├── PromptTooLongError       serve/engine.py: the prompt does not fit the context
     ├── EmptyPromptError         serve/engine.py: the prompt encodes to no tokens
     ├── ConversationRefusedError serve/engine.py: the chat template refuses the messages
     ├── UnknownTokenError        serve/engine.py: logit_bias names a token past the vocabulary
     ├── EngineError              serve/engine.py: llama.cpp failed on a checked request
     ├── BadRequestError          serve/errors.py: a request the server cannot do as asked
     └── ShuttingDownError        serve/errors.py: the server is draining (503)

The CLI prints an `AstraError` as one message without a traceback and exits with
`exit_code`. Anything else is a bug and keeps its traceback. The server answers each
with the HTTP status that `serve/errors.py` maps its type to.
"""

from __future__ import annotations

from dataclasses import dataclass


class AstraError(Exception):
    """A problem the user can fix; the message says what, where and how."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.fix = fix

    def details(self) -> list[str]:
        """Lines shown under the headline (empty for a one-line error)."""
        return []

    def __str__(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        lines.extend(f"  {line}" for line in self.details())
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    """One invalid value: the field path, where it was written, and what is wrong."""

    path: str
    message: str
    location: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return f"{prefix}{self.path}: {self.message}"


class ConfigError(AstraError):
    """A recipe or option is invalid; carries every problem found, not just the first."""

    def __init__(
        self,
        what: str,
        *,
        problems: list[Problem] | None = None,
        where: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(what, where=where, fix=fix)
        self.problems = problems or []

    def details(self) -> list[str]:
        return [f"- {p}" for p in self.problems]


class ModelError(AstraError):
    """A model cannot be found, downloaded, converted or loaded."""


class DataError(AstraError):
    """A data source cannot be read, has an unknown shape, or filters leave nothing."""


class DependencyError(AstraError):
    """A required package or system piece is missing; `fix` names the install command."""


class VerificationError(AstraError):
    """An output was written but does not behave like its source (e.g. a GGUF export)."""

    exit_code = 1
