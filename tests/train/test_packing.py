from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from astra_tune.templates import render_chat
from astra_tune.train.collator import PackedRowsCollator, pack_examples

CHATS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue, like the sea."},
    ],
    [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi there! How are you?"},
    ],
]


def features(tokenizer: Any) -> list[dict[str, list[int]]]:
    out = []
    for chat in CHATS:
        rendered = render_chat(tokenizer, chat)
        out.append(
            {"input_ids": rendered.input_ids, "assistant_masks": [int(t) for t in rendered.trained]}
        )
    return out


def test_best_fit_packing_keeps_every_example_within_rows() -> None:
    lengths = [90, 10, 60, 40, 30, 70, 5, 100]
    feats = [{"input_ids": list(range(n)), "assistant_masks": [1] * n} for n in lengths]
    rows = pack_examples(feats, max_len=100)
    assert all(len(r["input_ids"]) <= 100 for r in rows)
    assert sorted(n for r in rows for n in r["seq_lengths"]) == sorted(lengths)
    assert len(rows) == 5  # 405 tokens: the best possible with rows of 100


def test_packed_loss_equals_separate_examples(tiny_model_dir: Path, smollm2_tokenizer: Any) -> None:
    """Examples in one packed row must not see each other: same loss as run one by one."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    feats = features(smollm2_tokenizer)
    collate = PackedRowsCollator(pad_token_id=smollm2_tokenizer.pad_token_id)
    total_loss, total_tokens = 0.0, 0
    with torch.no_grad():
        for feat in feats:
            ids = torch.tensor([feat["input_ids"]])
            labels = torch.tensor(
                [
                    [
                        t if m else -100
                        for t, m in zip(feat["input_ids"], feat["assistant_masks"], strict=True)
                    ]
                ]
            )
            count = int((labels[:, 1:] != -100).sum())
            total_loss += model(input_ids=ids, labels=labels).loss.item() * count
            total_tokens += count
        separate = total_loss / total_tokens
        batch = collate(pack_examples(feats, max_len=4096))
        assert batch["input_ids"].shape[0] == 1  # all three share one row
        packed = model(**batch).loss.item()
        # Two rows of different lengths (padding segment in the shorter one).
        two_rows = collate(
            pack_examples(feats, max_len=len(feats[0]["input_ids"]) + len(feats[1]["input_ids"]))
        )
        assert two_rows["input_ids"].shape[0] == 2
        padded = model(**two_rows).loss.item()
    assert packed == pytest.approx(separate, rel=1e-5)
    assert padded == pytest.approx(separate, rel=1e-5)
    # Without restarting positions the examples would see each other: a different loss.
    leaky = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    # (The leak is small on a random model but far above float noise, which is ~1e-6.)
    assert abs(model(**dict(batch, use_cache=True)).loss.item() - separate) > 1e-4
    assert abs(model(**leaky).loss.item() - separate) > 1e-4


def test_segment_attention_matches_the_masked_reference(tiny_model_dir: Path) -> None:
    from astra_tune.train.attention import register

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    segmented = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation=register()
    ).eval()
    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (2, 60))
    positions = torch.cat([torch.arange(n) for n in (25, 20, 15)])[None].repeat(2, 1)
    positions[1] = torch.cat([torch.arange(n) for n in (40, 20)])
    with torch.no_grad():
        expected = reference(input_ids=ids, position_ids=positions, use_cache=False).logits
        got = segmented(input_ids=ids, position_ids=positions, use_cache=False).logits
        # Generation (a KV cache, no packing) still works through plain SDPA.
        segmented.generate(ids[:1, :5], max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_loss_on_labelled_positions_matches_the_full_loss(
    tiny_model_dir: Path, smollm2_tokenizer: Any
) -> None:
    """Projecting only labelled positions (rows laid end to end) changes no loss or gradient."""
    from astra_tune.train.attention import register
    from astra_tune.train.loss import can_flatten, labelled_positions_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=register())
    feats = features(smollm2_tokenizer)
    collate = PackedRowsCollator(pad_token_id=smollm2_tokenizer.pad_token_id)
    # Two rows of different lengths, so the shorter one ends in padding.
    batch = collate(
        pack_examples(feats, max_len=len(feats[0]["input_ids"]) + len(feats[1]["input_ids"]))
    )
    batch.pop("astra_num_tokens")
    assert batch["input_ids"].shape[0] == 2
    assert can_flatten(batch)

    def loss_and_grad(compute: Any) -> tuple[float, torch.Tensor]:
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.item(), model.lm_head.weight.grad.clone()

    full, full_grad = loss_and_grad(lambda: model(**batch).loss)
    lean, lean_grad = loss_and_grad(lambda: labelled_positions_loss(model, batch)[0])
    assert lean == pytest.approx(full, rel=1e-5)
    torch.testing.assert_close(lean_grad, full_grad, atol=1e-6, rtol=1e-4)
    # Given the Trainer's token count (gradient accumulation), it sums and divides by it.
    count = int((batch["labels"][:, 1:] != -100).sum())
    summed = labelled_positions_loss(model, batch, num_items_in_batch=2 * count)[0].item()
    assert summed == pytest.approx(full / 2, rel=1e-5)
    # Only the labelled positions went through the head.
    assert labelled_positions_loss(model, batch)[1]["positions"] == count
    # A padded (unpacked) batch keeps the model's own loss.
    assert not can_flatten({**batch, "attention_mask": torch.ones_like(batch["input_ids"])})


def padded_batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    """Rows of different lengths padded on the right, as TRL's collator lays them out."""
    feats = features(tokenizer)
    width = max(len(f["input_ids"]) for f in feats)
    ids, mask, labels = [], [], []
    for f in feats:
        pad = width - len(f["input_ids"])
        ids.append(f["input_ids"] + [tokenizer.pad_token_id] * pad)
        mask.append([1] * len(f["input_ids"]) + [0] * pad)
        labels.append(
            [t if m else -100 for t, m in zip(f["input_ids"], f["assistant_masks"], strict=True)]
            + [-100] * pad
        )
    return {name: torch.tensor(rows) for name, rows in
            (("input_ids", ids), ("attention_mask", mask), ("labels", labels))}  # fmt: skip


@pytest.mark.parametrize("head", ["fused", "model"])
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_every_gradient_matches_the_full_loss(
    tiny_model_dir: Path, smollm2_tokenizer: Any, layout: str, head: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Projecting only labelled positions leaves the loss and every gradient as they were.

    fused: the head and the loss in chunks (llama); model: the model's own head, for
    architectures the fused path does not know.
    """
    from astra_tune.train import loss as loss_module
    from astra_tune.train.attention import register
    from astra_tune.train.loss import labelled_positions_loss

    if head == "model":
        monkeypatch.setattr(loss_module, "PLAIN_HEAD_MODELS", frozenset())
    # Chunks of 5 positions, so the fused path crosses many chunk boundaries.
    monkeypatch.setattr(loss_module, "CHUNK_VALUES", 5 * smollm2_tokenizer.vocab_size)

    torch.manual_seed(0)
    if layout == "packed":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=register())
        feats = features(smollm2_tokenizer)
        batch = PackedRowsCollator(smollm2_tokenizer.pad_token_id)(pack_examples(feats, 64))
        batch.pop("astra_num_tokens")
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
        batch = padded_batch(smollm2_tokenizer)
    assert model.dtype == torch.float32

    def loss_and_grads(compute: Any) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    full, full_grads = loss_and_grads(lambda: model(**batch).loss)
    lean, lean_grads = loss_and_grads(lambda: labelled_positions_loss(model, batch)[0])
    assert lean == pytest.approx(full, rel=1e-5)
    assert full_grads.keys() == lean_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
    # Fewer positions went through the head than the batch holds.
    outputs = labelled_positions_loss(model, batch)[1]
    assert outputs["positions"] < batch["input_ids"].numel()
    assert ("logits" in outputs) == (head == "model")


def test_segment_attention_in_bf16_matches_fp32_masked_attention() -> None:
    """Short segments (run in fp32) and long ones (bf16 kernel), grouped heads, gradients."""
    from types import SimpleNamespace

    from astra_tune.train.attention import _UPCAST_BELOW, packed_attention

    lengths = [30, _UPCAST_BELOW + 20, 7]
    total = sum(lengths)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    torch.manual_seed(0)
    q32 = torch.randn(1, 4, total, 16)  # 4 query heads sharing 2 key/value heads
    k32, v32 = torch.randn(1, 2, total, 16), torch.randn(1, 2, total, 16)
    module = SimpleNamespace(training=True, num_key_value_groups=2)

    def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        allowed = (segment[:, None] == segment[None]) & torch.ones(total, total).tril().bool()
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        scores = (q @ k.transpose(-1, -2)) / 4.0
        out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        return out.transpose(1, 2)

    grad = torch.randn(1, total, 4, 16)
    inputs32 = [t.clone().requires_grad_() for t in (q32, k32, v32)]
    reference(*inputs32).backward(grad)
    inputs16 = [t.bfloat16().requires_grad_() for t in (q32, k32, v32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = packed_attention(module, *inputs16, None, position_ids=positions)  # type: ignore[arg-type]
    assert out.dtype == torch.bfloat16
    out.backward(grad.bfloat16())
    expected = reference(*(t.detach() for t in inputs32))
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    for got, want in zip(inputs16, inputs32, strict=True):
        assert got.grad is not None
        assert want.grad is not None
        torch.testing.assert_close(got.grad.float(), want.grad, atol=5e-2, rtol=5e-2)
