"""Both engines prompt and score the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from astra_tune.evaluate.engines import Decoding, LlamaCppEngine, TransformersEngine

RECORDS = [
    [
        {"role": "system", "content": "You are the Orrery Labs support assistant."},
        {"role": "user", "content": "How long does the Vex run?"},
        {"role": "assistant", "content": "The Orrery Vex runs for 3 hours on a full charge."},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Which app?"},
        {"role": "assistant", "content": "The Orrery Hub app."},
    ],
]


@pytest.fixture(scope="module")
def tiny_f32_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer

    from astra_tune.export.convert import write_gguf

    out = tmp_path_factory.mktemp("eval") / "tiny-f32.gguf"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return write_gguf(tiny_model_dir, out, "f32", tokenizer=tokenizer, metadata={}).path


def test_reference_nll_is_the_answer_and_its_end_of_turn(tiny_model_dir: Path) -> None:
    """Checked against a cross-entropy computed here from the rendered token ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    engine = TransformersEngine(tiny_model_dir)
    scores = engine.answer_nll(RECORDS, lambda n: None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for record, (nll, count) in zip(RECORDS, scores, strict=True):
        prompt = tokenizer.apply_chat_template(record[:-1], add_generation_prompt=True,
                                               tokenize=False)  # fmt: skip
        answer = tokenizer(record[-1]["content"] + "<|im_end|>", add_special_tokens=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        start = len(prompt_ids)
        expected = torch.nn.functional.cross_entropy(
            logits[start - 1 : -1], ids[0, start:], reduction="sum"
        )
        assert count == len(answer["input_ids"])  # the answer's tokens and <|im_end|>
        assert nll == pytest.approx(float(expected), rel=1e-5)


def test_transformers_and_llama_cpp_agree(tiny_model_dir: Path, tiny_f32_gguf: Path) -> None:
    hf = TransformersEngine(tiny_model_dir)
    cpp = LlamaCppEngine(tiny_f32_gguf)
    try:
        decoding = Decoding(max_new_tokens=8, batch_size=2)
        prompts = [r[:-1] for r in RECORDS]
        assert hf.generate(prompts, decoding, lambda n: None) == cpp.generate(
            prompts, decoding, lambda n: None
        )
        ours = hf.answer_nll(RECORDS, lambda n: None)
        theirs = cpp.answer_nll(RECORDS, lambda n: None)
        for (a, n), (b, m) in zip(ours, theirs, strict=True):
            assert n == m
            assert a == pytest.approx(b, rel=1e-3)
    finally:
        cpp.close()
