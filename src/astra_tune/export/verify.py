"""Prove an exported GGUF behaves like the PyTorch model it came from.

The PyTorch side runs once (fp32, then freed) and leaves a `Reference`; each GGUF is then
loaded in llama.cpp alone and compared with it, so peak memory is one model at a time.
Checks: next-token agreement and KL divergence over fixed prompts, greedy continuation,
tokenization of hard strings, the embedded chat template, end-of-turn as end-of-generation,
a trained answer that stops, and (for f16) a second reader, transformers' own GGUF loader.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from astra_tune.errors import ModelError
from astra_tune.progress import (
    quiet_hf_progress,
    quiet_library_noise,
    quiet_llama_logs,
)
from astra_tune.runs import SPLITS, RunLayout

# Minimum top-1 next-token agreement with the PyTorch model, by type. The bars for
# f16, q8_0 and q4_k_m; the rest in between or below, in order of bits per weight.
TOP1_MIN = {
    "f32": 0.99,
    "f16": 0.99,
    "bf16": 0.98,
    "q8_0": 0.97,
    "q6_k": 0.94,
    "q5_k_m": 0.92,
    "q5_k_s": 0.92,
    "q5_1": 0.92,
    "q5_0": 0.92,
    "q4_k_m": 0.90,
    "q4_k_s": 0.88,
    "iq4_xs": 0.88,
    "iq4_nl": 0.88,
    "q4_1": 0.86,
    "q4_0": 0.86,
    "q3_k_l": 0.80,
    "q3_k_m": 0.78,
    "q3_k_s": 0.72,
    "q2_k": 0.60,
}
FLOAT_TYPES = ("f32", "f16", "bf16")
# Far below any quantization's loss: a file this far off has a conversion bug.
BROKEN_TOP1 = 0.5
BROKEN_KL = 1.0
GREEDY_TOKENS = 32
# Logit gap under which f16 rounding may pick either token (f16 carries ~3 decimal digits).
GREEDY_TIE = 0.02

PASSAGES = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
    "wick, polished the great lens, and wrote the weather into a leather-bound log: wind "
    "from the north-east, a falling barometer, fog banks drifting in from the open sea.",
    'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n'
    "    values = [0, 1]\n    while len(values) < n:\n        values.append(values[-1] + "
    "values[-2])\n    return values[:n]\n\nprint(fibonacci(10))  # [0, 1, 1, 2, 3, 5, 8, 13]\n",
    "Photosynthesis converts light energy into chemical energy. In the chloroplasts, water "
    "is split, oxygen is released, and carbon dioxide is fixed into sugars through the "
    "Calvin cycle. The overall reaction is 6 CO2 + 6 H2O -> C6H12O6 + 6 O2.",
    "Paris, Berlin, Madrid and Rome are European capitals. Tokyo is the capital of Japan; "
    "its population exceeds 37 million people in the greater metropolitan area, making it "
    "one of the largest cities on Earth. Canberra, not Sydney, is Australia's capital.",
    "| Item | Qty | Price |\n|------|-----|-------|\n| Apples | 3 | $1.20 |\n| Bread | 1 | "
    "$2.50 |\n\nTotal: $6.10 — paid by card on 2024-03-15 at 14:32.",
    "Il était une fois une petite ville au bord de la mer. Les pêcheurs partaient avant "
    "l'aube et revenaient le soir, les filets pleins de sardines et de maquereaux.",
)
CHATS = (
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "Give me a word that rhymes with cat."},
        {"role": "assistant", "content": "Hat."},
        {"role": "user", "content": "And one that rhymes with dog?"},
    ],
)
HARD_STRINGS = (
    "Héllo wörld — ünïcödé ☃ ñ ß œ",
    "emoji 🚀🦙😶\u200d🌫️ 👍🏽 🇫🇷",
    "def f(x):\n\treturn x**2  # square\n",
    "   leading spaces, and   runs    of   spaces\n\n\n\ttabs\t\tand\r\nCRLF",
    "数字 12345 1,234.56 3.14159 0xFF 1e-9",
    "Ça va? Привет! مرحبا שלום नमस्ते こんにちは 안녕하세요",
    "I've been 'told he's there, 'RE you sure? We'Ve a'lL",
    'https://example.com/path?q=1&r=two#frag <b>bold</b> {"json": [1, 2.5, null]}',
    "",
    " ",
    "\n",
)


@dataclass
class Reference:
    """What the PyTorch model does on the fixed inputs; computed once per export."""

    prompts: list[list[int]]
    logprobs: list[np.ndarray]
    greedy_prompt: list[int]
    greedy: list[int]
    greedy_margins: list[float]  # top-1 minus top-2 logit at each greedy step
    hard_strings: list[tuple[str, list[int], list[int]]]
    template: str | None
    template_renders: list[str]
    eog_ids: list[int]
    stop_prompt: list[int] | None
    stop_answer: str | None
    stop_limit: int
    stop_torch: bool  # PyTorch's own greedy answer ends with an end-of-turn token
    stop_gates: bool  # a trained answer (run export), not just a generic question

    @property
    def positions(self) -> int:
        return sum(len(p) for p in self.prompts)


@dataclass
class FileReport:
    """Verification of one GGUF file (a row of the table, an entry of verify.json)."""

    file: str
    qtype: str
    size_bytes: int
    adapter: str | None = None
    positions: int = 0
    top1: float | None = None
    top1_min: float | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    greedy_match: bool | None = None
    greedy_common_prefix: int | None = None
    greedy_tie_margin: float | None = None  # set when the paths split at a near-tie
    tokenization: str | None = None
    template: bool | None = None
    eot_is_eog: bool | None = None
    stops_at_eot: bool | None = None
    answer_matches: bool | None = None
    reader: bool | None = None
    reader_max_abs_diff: float | None = None
    failures: list[str] = field(default_factory=list)  # the file is wrong
    warnings: list[str] = field(default_factory=list)  # it works, below its quality target

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def build_reference(
    model_dir: Path,
    *,
    positions: int = 512,
    stop_record: list[dict[str, str]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Reference:
    """Run the PyTorch model (fp32, CPU) on the fixed prompts; free it afterwards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    note = progress or (lambda _: None)
    with quiet_hf_progress(), quiet_library_noise():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    prompts = _prompts(tokenizer, positions)
    logprobs: list[np.ndarray] = []
    with torch.no_grad():
        for ids in prompts:
            note("reference logits")
            logits = model(torch.tensor([ids])).logits[0].float()
            logprobs.append(torch.log_softmax(logits, dim=-1).numpy())
    eog = _eog_ids(tokenizer)
    greedy_prompt = _chat_ids(tokenizer, CHATS[0]) or prompts[0][:32]
    note("reference greedy continuation")
    greedy, margins = _torch_greedy(model, greedy_prompt, eog, GREEDY_TOKENS)
    template = getattr(tokenizer, "chat_template", None) or None
    renders = [_render(tokenizer, chat, None) for chat in CHATS] if template else []
    hard = [
        (
            text,
            tokenizer.encode(text, add_special_tokens=False),
            tokenizer.encode(text, add_special_tokens=True),
        )
        for text in _hard_strings(tokenizer)
    ]
    stop_prompt: list[int] | None = None
    stop_answer: str | None = None
    stop_gates = stop_record is not None
    chat = stop_record[:-1] if stop_record else list(CHATS[0])
    stop_limit = 64
    stop_torch = False
    if template:
        stop_prompt = _chat_ids(tokenizer, chat)
        stop_answer = stop_record[-1]["content"] if stop_record else None
        if stop_answer is not None:
            stop_limit = 2 * len(tokenizer.encode(stop_answer, add_special_tokens=False)) + 16
        note("reference answer")
        answer, _ = _torch_greedy(model, stop_prompt, eog, stop_limit)
        stop_torch = bool(answer) and answer[-1] in eog
    del model
    return Reference(
        prompts=prompts,
        logprobs=logprobs,
        greedy_prompt=greedy_prompt,
        greedy=greedy,
        greedy_margins=margins,
        hard_strings=hard,
        template=template,
        template_renders=renders,
        eog_ids=sorted(eog),
        stop_prompt=stop_prompt,
        stop_answer=stop_answer,
        stop_limit=stop_limit,
        stop_torch=stop_torch,
        stop_gates=stop_gates,
    )


def check_gguf(
    path: Path,
    qtype: str,
    reference: Reference,
    tokenizer: Any,
    *,
    adapter: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> FileReport:
    """Load `path` (plus `adapter`) in llama.cpp and compare it with `reference`."""

    note = progress or (lambda _: None)
    report = FileReport(
        file=path.name,
        qtype=qtype,
        size_bytes=path.stat().st_size,
        adapter=adapter.name if adapter else None,
    )
    longest = max(len(p) for p in reference.prompts)
    stop_len = len(reference.stop_prompt or []) + 256
    with _llama(path, adapter, n_ctx=max(longest, stop_len, 512) + 64) as llm:
        note("llama.cpp logits")
        _check_logits(llm, reference, report)
        note("greedy continuation")
        _check_greedy(llm, reference, report)
        note("tokenization")
        _check_tokenization(llm, reference, report)
        _check_template_and_stops(llm, reference, tokenizer, report)
        if reference.stop_prompt is not None:
            note("trained answer")
            _check_trained_answer(llm, reference, report)
    return report


def _check_logits(llm: Any, reference: Reference, report: FileReport) -> None:
    """Top-1 agreement and KL divergence with PyTorch on the fixed prompts."""
    agree = 0
    kls: list[float] = []
    for ids, ref in zip(reference.prompts, reference.logprobs, strict=True):
        llm.reset()
        llm.eval(ids)
        got = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
        got = got - _logsumexp(got)
        # A position where PyTorch itself rates llama.cpp's pick within rounding of its own
        # (a near-tie: common in small and random models) agrees, as in the greedy check.
        rows = np.arange(len(ids))
        ref_top, got_top = ref.argmax(-1), got.argmax(-1)
        gap = ref[rows, ref_top] - ref[rows, got_top]
        agree += int(((got_top == ref_top) | (gap < GREEDY_TIE)).sum())
        p = np.exp(ref.astype(np.float64))
        kls.extend((p * (ref - got)).sum(-1).tolist())
    report.positions = reference.positions
    report.top1 = agree / reference.positions
    report.top1_min = TOP1_MIN.get(report.qtype)
    report.kl_mean = float(np.mean(kls))
    report.kl_max = float(np.max(kls))
    if report.top1 < BROKEN_TOP1 or report.kl_mean > BROKEN_KL:
        report.failures.append(
            f"top-1 agreement {report.top1:.3f}, KL {report.kl_mean:.3g}: the weights or "
            "the layout are wrong, not merely quantized"
        )
    elif report.top1_min is not None and report.top1 < report.top1_min:
        # Float files must match; quantized ones lose agreement in llama.cpp's kernels
        # (activations are quantized too), more on small models, so that is a warning.
        problems = report.failures if report.qtype in FLOAT_TYPES else report.warnings
        problems.append(f"top-1 agreement {report.top1:.3f} < target {report.top1_min}")


def _check_greedy(llm: Any, reference: Reference, report: FileReport) -> None:
    """The greedy continuation matches PyTorch's (a near-tie split excepted)."""
    greedy = _llama_greedy(llm, reference.greedy_prompt, set(reference.eog_ids))
    report.greedy_common_prefix = _common_prefix(greedy, reference.greedy)
    report.greedy_match = greedy == reference.greedy
    split = report.greedy_common_prefix
    if not report.greedy_match and split < len(reference.greedy_margins):
        # Two tokens within rounding of each other: either path is the model's answer,
        # so a split there says nothing about the conversion.
        margin = reference.greedy_margins[split]
        if margin < GREEDY_TIE:
            report.greedy_match = True
            report.greedy_tie_margin = margin
    if report.qtype in FLOAT_TYPES and not report.greedy_match:
        report.failures.append(
            f"greedy {GREEDY_TOKENS}-token continuation differs from PyTorch after "
            f"{report.greedy_common_prefix} tokens"
        )


def _check_tokenization(llm: Any, reference: Reference, report: FileReport) -> None:
    """llama.cpp tokenizes the hard strings exactly as the HF tokenizer does."""
    bad = [
        text
        for text, plain, full in reference.hard_strings
        if llm.tokenize(text.encode(), add_bos=False, special=True) != plain
        or llm.tokenize(text.encode(), add_bos=True, special=True) != full
    ]
    total = len(reference.hard_strings)
    report.tokenization = f"{total - len(bad)}/{total}"
    if bad:
        report.failures.append(f"tokenization differs on {bad[0]!r}")


def _check_template_and_stops(
    llm: Any, reference: Reference, tokenizer: Any, report: FileReport
) -> None:
    """The GGUF's chat template renders as the original; end-of-turn tokens stop llama.cpp."""
    import llama_cpp

    template = llm.metadata.get("tokenizer.chat_template")
    if reference.template:
        renders = [_render(tokenizer, chat, template) for chat in CHATS] if template else []
        report.template = renders == reference.template_renders
        if not report.template:
            report.failures.append("the GGUF's chat template renders differently")
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    if reference.eog_ids:
        report.eot_is_eog = all(llama_cpp.llama_vocab_is_eog(vocab, i) for i in reference.eog_ids)
        if not report.eot_is_eog:
            report.failures.append("llama.cpp does not stop at the end-of-turn token")


def _check_trained_answer(llm: Any, reference: Reference, report: FileReport) -> None:
    """A trained answer (or a plain question's) ends at the end-of-turn token, as in PyTorch."""
    assert reference.stop_prompt is not None
    answer = _llama_greedy(llm, reference.stop_prompt, set(reference.eog_ids), reference.stop_limit)
    report.stops_at_eot = bool(answer) and answer[-1] in reference.eog_ids
    if reference.stop_answer is not None:
        text = llm.detokenize(answer[:-1] if report.stops_at_eot else answer)
        report.answer_matches = (
            text.decode("utf-8", "replace").strip() == reference.stop_answer.strip()
        )
    if reference.stop_torch and not report.stops_at_eot:
        # PyTorch ends this answer; a file that does not has lost the stop.
        serious = report.qtype in FLOAT_TYPES and reference.stop_gates
        problems = report.failures if serious else report.warnings
        problems.append(
            "greedy generation of a trained answer does not stop"
            if reference.stop_gates
            else "its greedy answer to a plain question runs past the end-of-turn "
            "token where PyTorch's stops"
        )
    elif reference.stop_gates and not reference.stop_torch:
        report.warnings.append(
            "the model does not end its trained answer even in PyTorch (train longer?)"
        )


def check_reader(
    gguf_path: Path, model_dir: Path, *, progress: Progress | None = None, task: Any = None
) -> tuple[bool, float]:
    """transformers' GGUF loader reads our f16 file back to the source's weights, f16-rounded.

    Returns (every tensor equal to the source rounded to f16, largest absolute difference).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from astra_tune.export.convert import SafetensorsSource, load_config
    from astra_tune.models.gguf_import import track_gguf_loading

    bar = progress or Progress(disable=True)
    with quiet_hf_progress(), quiet_library_noise():
        # The skeleton comes from the GGUF's own metadata, as any reader of the file would
        # build it (a mistral checkpoint reads back as llama, with the same tensor names).
        meta = gguf_utils.load_gguf_checkpoint(str(gguf_path), return_tensors=False)
        values = dict(meta["config"])
        model_type = values.pop("model_type")
        values.pop("_model_name_or_path", None)
        config = AutoConfig.for_model(model_type, **values)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        with track_gguf_loading(gguf_utils, bar, task):
            loaded = gguf_utils.load_gguf_checkpoint(
                str(gguf_path), return_tensors=True, model_to_load=skeleton
            )["tensors"]
    source = SafetensorsSource(model_dir)
    worst = 0.0
    exact = True
    for name in source.names():
        if name not in loaded:
            if name == "lm_head.weight" and load_config(model_dir).get("tie_word_embeddings"):
                continue
            return False, float("inf")
        original = torch.from_numpy(source.get(name))
        expected = original if original.dim() <= 1 else original.half().float()
        got = loaded[name].float()
        if got.shape != expected.shape:
            return False, float("inf")
        diff = float((got - expected).abs().max()) if got.numel() else 0.0
        worst = max(worst, diff)
        exact = exact and diff == 0.0
    return exact, worst


def write_verify_json(path: Path, reports: list[FileReport], extra: dict[str, Any]) -> None:
    """verify.json: one entry per file, plus what was compared."""
    from astra_tune.atomic import write_text

    payload = {**extra, "passed": all(r.passed for r in reports)}
    payload["files"] = [r.to_json() for r in reports]
    write_text(path, json.dumps(payload, indent=2) + "\n")


def stop_record_of(run_dir: Path | None) -> list[dict[str, str]] | None:
    """A chat record the run trained on (its first), whose answer the export must end."""
    if run_dir is None:
        return None
    layout = RunLayout.at(run_dir)
    for split in SPLITS:
        path = layout.split(split)
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                messages = record.get("messages")
                if messages and messages[-1].get("role") == "assistant":
                    return [{"role": m["role"], "content": m["content"]} for m in messages]
    return None


@contextlib.contextmanager
def _llama(path: Path, adapter: Path | None, *, n_ctx: int) -> Iterator[Any]:
    from llama_cpp import Llama

    if adapter is not None:
        from astra_tune.models.gguf_meta import check_adapter_file

        check_adapter_file(adapter, path)
    try:
        with quiet_llama_logs():
            llm = Llama(
                model_path=str(path),
                lora_path=str(adapter) if adapter else None,
                n_ctx=n_ctx,
                n_batch=512,
                logits_all=True,
                n_threads=os.cpu_count() or 1,
                verbose=False,
            )
    except (ValueError, RuntimeError) as exc:
        raise ModelError(
            f"llama.cpp cannot load {path.name}{' with ' + adapter.name if adapter else ''}: {exc}",
            where=str(path),
            fix="this is an export bug; please report it with the model's config.json",
        ) from exc
    try:
        yield llm
    finally:
        llm.close()


def _prompts(tokenizer: Any, positions: int) -> list[list[int]]:
    # (text, add special tokens): rendered chats carry their own BOS when the template has one.
    texts: list[tuple[str, bool]] = []
    if getattr(tokenizer, "chat_template", None):
        for chat in CHATS:
            answer = {"role": "assistant", "content": "Here is a short, careful answer."}
            texts.append((_render(tokenizer, [*chat, answer], None, generation=False), False))
    texts.extend((passage, True) for passage in PASSAGES)
    prompts: list[list[int]] = []
    total = 0
    while total < positions:
        for text, special in texts:
            ids = tokenizer.encode(text, add_special_tokens=special)[:256]
            if len(ids) < 2:
                continue
            prompts.append(ids)
            total += len(ids)
            if total >= positions:
                break
        texts = [(t + "\n" + t, special) for t, special in texts]  # longer, still distinct
    return prompts


def _render(tokenizer: Any, chat: Any, template: str | None, *, generation: bool = True) -> str:
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation}
    if template is not None:
        kwargs["chat_template"] = template
    return str(tokenizer.apply_chat_template(list(chat), **kwargs))


def _chat_ids(tokenizer: Any, chat: Any) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        return []
    return list(tokenizer.encode(_render(tokenizer, chat, None), add_special_tokens=False))


def _hard_strings(tokenizer: Any) -> list[str]:
    strings = list(HARD_STRINGS)
    specials = [t for t in (tokenizer.bos_token, tokenizer.eos_token) if t]
    if specials:
        strings.append(f"{specials[0]}hello{specials[-1]} world")
    return strings


def _eog_ids(tokenizer: Any) -> set[int]:
    from astra_tune.export.vocab import end_of_turn_id

    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eot = end_of_turn_id(tokenizer)
    if eot is not None:
        ids.add(eot)
    return ids


def _torch_greedy(
    model: Any, prompt: list[int], eog: set[int], limit: int
) -> tuple[list[int], list[float]]:
    """Greedy tokens and, at each step, the gap between the best and second-best logit."""
    import torch

    with torch.no_grad(), quiet_library_noise():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=limit,
            do_sample=False,
            eos_token_id=sorted(eog) or None,
            pad_token_id=sorted(eog)[0] if eog else 0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = [int(t) for t in out.sequences[0, len(prompt) :]]
    margins = []
    for step in out.logits:
        top = torch.topk(step[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return tokens, margins


def _llama_greedy(
    llm: Any, prompt: list[int], eog: set[int], limit: int = GREEDY_TOKENS
) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    for _ in range(limit):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if token in eog:
            break
        llm.eval([token])
    return out


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(-1, keepdims=True))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
