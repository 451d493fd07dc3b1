"""Models to evaluate: transformers for HF directories and runs, llama.cpp for GGUF files.

Both engines render the same prompts: the model's own chat template over the record's
turns before the reference answer, with the generation prompt, tokenized without adding
special tokens (the template writes any BOS itself). The likelihood of the reference is
teacher-forced over the answer's tokens and its end-of-turn token, as in training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from astra_tune.errors import DataError, ModelError
from astra_tune.progress import quiet_llama_logs
from astra_tune.templates import answer_length

Message = dict[str, str]
Render = Callable[[Sequence[Message], bool], str]


@dataclass(frozen=True)
class Decoding:
    """How answers are generated."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 is greedy
    batch_size: int = 8
    seed: int = 0


class Engine(Protocol):
    description: str

    def generate(
        self, prompts: list[list[Message]], decoding: Decoding, advance: Callable[[int], None]
    ) -> list[str]: ...

    def answer_nll(
        self, records: list[list[Message]], advance: Callable[[int], None]
    ) -> list[tuple[float, int]]: ...

    def close(self) -> None: ...


def answer_text_span(render: Render, messages: Sequence[Message], eot: str) -> tuple[str, str]:
    """(prompt text, prompt + reference answer up to and including its end-of-turn)."""
    prompt = render(messages[:-1], True)
    full = render(messages, False)
    if not full.startswith(prompt):
        raise ModelError(
            "the chat template renders the prompt differently once the answer is added, so "
            "the answer's tokens cannot be located",
            fix="evaluate with a prefix-stable chat template",
        )
    return prompt, full[: len(prompt) + answer_length(full[len(prompt) :], eot)]


def open_engine(spec: str) -> Engine:
    """The engine for a model spec: .gguf -> llama.cpp, a registry version -> llama.cpp on
    the file it is served from (with its adapter), anything else -> transformers."""
    from astra_tune.models.resolve import parse_spec, resolve_model

    parsed = parse_spec(spec)
    if parsed.kind == "gguf" and parsed.path is not None:
        return LlamaCppEngine(parsed.path)
    if parsed.version is not None:
        from astra_tune.registry.store import Registry, pick_quantization

        version = Registry().resolve(parsed.version.reference, verify=True)
        gguf = version.models[pick_quantization(version, None)]
        engine = LlamaCppEngine(gguf, lora=version.adapter)
        engine.description = f"{version.reference} via llama.cpp"
        return engine
    return TransformersEngine(resolve_model(spec).path)


class TransformersEngine:
    """A Hugging Face directory or a run's adapter (merged into its base) on CPU or GPU."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from astra_tune.chat import _load_adapter
        from astra_tune.progress import quiet_library_noise

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not self.tokenizer.chat_template:
            raise ModelError(
                f"{model_dir} has no chat template, so chat records cannot be prompted",
                where=str(model_dir),
            )
        with quiet_library_noise():
            if (model_dir / "adapter_config.json").is_file():
                model = _load_adapter(model_dir, dtype)
            else:
                model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model = model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eot = self.tokenizer.eos_token or ""
        self.description = f"{model_dir} via transformers on {self.device}"

    def render(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=generation_prompt
            )
        )

    def generate(
        self, prompts: list[list[Message]], decoding: Decoding, advance: Callable[[int], None]
    ) -> list[str]:
        import torch

        self.tokenizer.padding_side = "left"
        answers: list[str] = []
        torch.manual_seed(decoding.seed)
        sampling: dict[str, Any] = {"do_sample": False}
        if decoding.temperature > 0:
            sampling = {"do_sample": True, "temperature": decoding.temperature}
        for start in range(0, len(prompts), decoding.batch_size):
            batch = [self.render(m, True) for m in prompts[start : start + decoding.batch_size]]
            inputs = self.tokenizer(
                batch, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs, **sampling, max_new_tokens=decoding.max_new_tokens,
                    pad_token_id=self.pad_id,
                )  # fmt: skip
            for ids in out[:, inputs["input_ids"].shape[1] :]:
                answers.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
            advance(len(batch))
        return answers

    def answer_nll(
        self, records: list[list[Message]], advance: Callable[[int], None]
    ) -> list[tuple[float, int]]:
        import torch

        results = []
        for messages in records:
            prompt, upto = answer_text_span(self.render, messages, self.eot)
            encoded = self.tokenizer(
                upto, add_special_tokens=False, return_offsets_mapping=True, return_tensors="pt"
            )
            offsets = encoded.pop("offset_mapping")[0]
            scored = (offsets[:, 0] >= len(prompt)).to(self.device)
            scored[0] = False  # the first token has no prediction
            ids = encoded["input_ids"].to(self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids).logits[0].float()
            logprobs = torch.log_softmax(logits[:-1], dim=-1)
            target = ids[0, 1:]
            token_nll = -logprobs.gather(1, target[:, None])[:, 0]
            mask = scored[1:]
            results.append((float(token_nll[mask].sum()), int(mask.sum())))
            advance(1)
        return results

    def close(self) -> None:
        """Nothing to release: the model is freed with the object."""


class LlamaCppEngine:
    """A GGUF through llama.cpp, prompted with the chat template stored in the file."""

    def __init__(self, gguf: Path, n_ctx: int = 4096, lora: Path | None = None) -> None:
        from llama_cpp import Llama

        from astra_tune.models.gguf_meta import gguf_facts
        from astra_tune.ollama.translate import JinjaChat

        facts = gguf_facts(gguf)
        if not facts["chat_template"]:
            raise ModelError(f"{gguf.name} has no chat template", where=str(gguf))
        self.chat = JinjaChat(facts["chat_template"], facts["bos_token"], facts["eos_token"])
        self.stops = facts["stop"]
        self.eot = self.stops[0] if self.stops else facts["eos_token"]
        self.gguf = gguf
        self.n_ctx = n_ctx
        self.lora = str(lora) if lora is not None else None
        try:
            with quiet_llama_logs():
                self.llm = Llama(str(gguf), n_ctx=n_ctx, n_threads=os.cpu_count() or 1,
                                 lora_path=self.lora, verbose=False)  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {gguf.name}: {exc}", where=str(gguf)) from exc
        self._scorer: Any = None
        self.description = f"{gguf} via llama.cpp"

    def render(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        return self.chat.render(messages, generation_prompt)

    def _tokens(self, llm: Any, text: str) -> list[int]:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(
        self, prompts: list[list[Message]], decoding: Decoding, advance: Callable[[int], None]
    ) -> list[str]:
        answers = []
        for messages in prompts:
            tokens = self._tokens(self.llm, self.render(messages, True))
            result = self.llm.create_completion(
                prompt=tokens, max_tokens=decoding.max_new_tokens,
                temperature=decoding.temperature, seed=decoding.seed, stop=self.stops or None,
                repeat_penalty=1.0,
            )  # fmt: skip
            answers.append(result["choices"][0]["text"].strip())  # type: ignore[index]
            advance(1)
        return answers

    def answer_nll(
        self, records: list[list[Message]], advance: Callable[[int], None]
    ) -> list[tuple[float, int]]:
        import numpy as np
        from llama_cpp import Llama

        if self._scorer is None:
            # Scoring needs the logits of every position, which generation does not.
            with quiet_llama_logs():
                self._scorer = Llama(str(self.gguf), n_ctx=self.n_ctx, logits_all=True,
                                     lora_path=self.lora, n_threads=os.cpu_count() or 1,
                                     verbose=False)  # fmt: skip
        results = []
        for messages in records:
            prompt, upto = answer_text_span(self.render, messages, self.eot)
            head = self._tokens(self._scorer, prompt)
            tokens = self._tokens(self._scorer, upto)
            start = 0
            while start < min(len(head), len(tokens)) and head[start] == tokens[start]:
                start += 1
            if len(tokens) > self.n_ctx:
                raise DataError(f"a record has {len(tokens)} tokens, over the context")
            self._scorer.reset()
            self._scorer.eval(tokens)
            logits = np.asarray(self._scorer.scores[: len(tokens)], dtype=np.float64)
            shifted = logits - logits.max(axis=1, keepdims=True)
            logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            positions = range(max(start, 1), len(tokens))
            nll = -sum(logprobs[p - 1, tokens[p]] for p in positions)
            results.append((float(nll), len(positions)))
            advance(1)
        return results

    def close(self) -> None:
        self.llm.close()
        if self._scorer is not None:
            self._scorer.close()
