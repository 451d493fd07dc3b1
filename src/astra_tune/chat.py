"""Streaming chat with a resolved model, formatted by the model's own chat template.

Hugging Face directories run through transformers; `.gguf` files run through llama.cpp,
which reads the template stored in the GGUF. Either way the prompt is what the model was
trained on: no hand-written prompt strings here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rich.console import Console

from astra_tune.errors import ModelError
from astra_tune.models.catalog import bundled_gguf_path
from astra_tune.models.resolve import parse_spec, resolve_model
from astra_tune.progress import quiet_library_noise, quiet_llama_logs

if TYPE_CHECKING:
    from astra_tune.registry.store import ModelVersion

Engine = Literal["auto", "transformers", "llama.cpp"]
Message = dict[str, str]


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling settings shared by every engine."""

    # Low by default: small instruct models (the 135M default) ramble at 0.7 and stay on
    # topic at 0.2, which is also what SmolLM2's authors recommend.
    temperature: float = 0.2
    top_p: float = 0.9
    max_tokens: int = 512
    seed: int | None = None


class ChatEngine(Protocol):
    """Something that turns a conversation into a stream of answer text."""

    description: str

    def stream(
        self,
        messages: list[Message],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Generator[str, None, None]: ...

    def close(self) -> None: ...


class TransformersChat:
    """Chat through transformers `generate` with a token streamer."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float32
        if self.device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            with quiet_library_noise():
                if (model_dir / "adapter_config.json").is_file():
                    model = _load_adapter(model_dir, dtype)
                else:
                    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
            self.model = model.to(self.device)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the model in {model_dir}: {exc}",
                where=str(model_dir),
                fix="check that the directory holds config.json, tokenizer files and *.safetensors",
            ) from exc
        self.model.eval()
        if not self.tokenizer.chat_template:
            raise ModelError(
                f"the model in {model_dir} has no chat template, so it is not a chat model",
                where=str(model_dir / "tokenizer_config.json"),
                fix="chat with an instruct model (e.g. smollm2-135m-instruct)",
            )
        self.description = f"{model_dir.name} via transformers on {self.device} ({dtype})".replace(
            "torch.", ""
        )

    def stream(
        self,
        messages: list[Message],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Generator[str, None, None]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancel is not None and cancel.is_set()

        sampling: dict[str, Any] = {"do_sample": False}
        if options.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": options.temperature,
                "top_p": options.top_p,
            }
        failure: list[BaseException] = []

        def run() -> None:
            try:
                if options.seed is not None:
                    torch.manual_seed(options.seed)
                with torch.inference_mode():
                    self.model.generate(
                        **inputs,
                        **sampling,
                        max_new_tokens=options.max_tokens,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Cancelled()]),
                        pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    )
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            if cancel is not None and worker.is_alive():
                cancel.set()
            worker.join()
        if failure:
            raise failure[0]

    def close(self) -> None:
        """Nothing to release: the model is freed with the object."""


def _load_adapter(adapter_dir: Path, dtype: Any) -> Any:
    """Base model + LoRA adapter, merged so generation runs at base-model speed."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path") or ""
    if not Path(base).is_dir():
        raise ModelError(
            f"the adapter's base model is not at {base!r}",
            where=str(adapter_dir / "adapter_config.json"),
            fix="prepare the base model again (`astra models pull`) or fix base_model_name_or_path",
        )
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


class LlamaCppChat:
    """Chat through llama.cpp, using the chat template stored in the GGUF."""

    def __init__(self, gguf_path: Path, *, n_ctx: int = 4096, lora: Path | None = None) -> None:
        from llama_cpp import Llama

        if lora is not None:
            from astra_tune.models.gguf_meta import check_adapter_file

            check_adapter_file(lora, gguf_path)
        try:
            with quiet_llama_logs():
                self.llm = Llama(
                    model_path=str(gguf_path),
                    lora_path=str(lora) if lora is not None else None,
                    n_ctx=n_ctx,
                    n_threads=os.cpu_count() or 1,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"llama.cpp cannot load {gguf_path.name}"
                + (f" with adapter {lora.name}" if lora else "")
                + f": {exc}",
                where=str(gguf_path),
                fix="check that the file is a complete GGUF (re-export or re-download it)",
            ) from exc
        self.description = f"{gguf_path.name} via llama.cpp on cpu" + (
            f" + adapter {lora.name}" if lora else ""
        )

    def stream(
        self,
        messages: list[Message],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Generator[str, None, None]:
        chunks = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            temperature=options.temperature,
            top_p=options.top_p,
            max_tokens=options.max_tokens,
            seed=options.seed,
            stream=True,
        )
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                break
            text = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
            if text:
                yield text

    def close(self) -> None:
        """Free the llama.cpp model now, not in a destructor at interpreter exit."""
        self.llm.close()


@dataclass(frozen=True)
class ChatTarget:
    """A model made ready on disk for one engine; loading it is the next, separate step."""

    engine: Literal["transformers", "llama.cpp"]
    path: Path
    lora: Path | None = None  # llama.cpp adapter GGUF applied on top of `path`
    system: str | None = None  # a registry version's own system prompt


def prepare_chat(
    spec: str,
    *,
    engine: Engine = "auto",
    console: Console | None = None,
    lora: Path | None = None,
) -> ChatTarget:
    """Resolve `spec` for chat (dequantizing or downloading if needed, with progress).

    `.gguf` files and registry models (NAME[:TAG]) run on llama.cpp; everything else
    runs on transformers. A path or catalog name wins over a registry name.
    """
    parsed = parse_spec(spec)
    if engine == "auto":
        engine = "llama.cpp" if parsed.kind in ("gguf", "registry") else "transformers"
    if engine == "transformers":
        if lora is not None:
            raise ModelError(
                "--lora applies a llama.cpp adapter GGUF, so it needs a .gguf base model",
                fix="pass the base model's .gguf file (from `astra export --adapter-only`)",
            )
        system = parsed.version.system if parsed.version is not None else None
        return ChatTarget("transformers", resolve_model(spec, console=console).path, None, system)
    if parsed.version is not None:
        return _registry_target(parsed.version, lora)
    if parsed.kind == "gguf" and parsed.path is not None:
        return ChatTarget("llama.cpp", parsed.path, lora)
    if parsed.entry is not None and parsed.entry.source == "bundled":
        return ChatTarget("llama.cpp", bundled_gguf_path(parsed.entry))
    raise ModelError(
        f"{spec} is not a GGUF model, and llama.cpp runs only GGUF files",
        fix="use --engine transformers, or export the model to GGUF first",
    )


def _registry_target(version: ModelVersion, lora: Path | None) -> ChatTarget:
    """A registry version on llama.cpp: its preferred GGUF, its adapter and its system."""
    from astra_tune.registry.store import Registry, pick_quantization

    if lora is not None and version.adapter is not None:
        raise ModelError(
            f"{version.reference} carries its own adapter; --lora would add a second one",
            where="--lora",
            fix="drop --lora",
        )
    checked = Registry().resolve(version.reference, verify=True)  # blobs match digests
    gguf = checked.models[pick_quantization(checked, None)]
    return ChatTarget("llama.cpp", gguf, lora or checked.adapter, checked.system)


def load_chat(target: ChatTarget) -> ChatEngine:
    """Load a prepared model into its engine."""
    if target.engine == "llama.cpp":
        return LlamaCppChat(target.path, lora=target.lora)
    return TransformersChat(target.path)


def open_chat(spec: str, *, engine: Engine = "auto", console: Console | None = None) -> ChatEngine:
    """Prepare and load `spec` for chat in one call."""
    return load_chat(prepare_chat(spec, engine=engine, console=console))
