"""The tokenizer as llama.cpp reads it: vocabulary, token types, merges, special ids, template.

Two vocabulary kinds cover the llama family:
  - byte-level BPE ("gpt2" in GGUF): Llama 3, SmolLM/SmolLM2, Qwen2. llama.cpp re-implements
    each model's pre-tokenizer regex and picks it by name (`tokenizer.ggml.pre`), so the
    name must be right or words split differently from training.
  - SentencePiece-style BPE with byte fallback ("llama" in GGUF): Llama 2, Mistral. llama.cpp
    merges by score, so scores must follow the merge order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from astra_tune.errors import ModelError

# llama.cpp names its pre-tokenizers by the token ids of this text (convert_hf_to_gguf.py,
# get_vocab_base_pre); the hashes below are the ones it records for the llama family.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
}
# The split regexes of tokenizer.json pre-tokenizers llama.cpp implements under these names;
# used when a retrained vocabulary makes the hash unknown but the pre-tokenizer is standard.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRE = ("llama-bpe", "smollm", "qwen2", "gpt-2", "tekken")
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class VocabInfo:
    """What the converter writes and verification relies on."""

    kind: str  # "gpt2" | "llama"
    pre: str | None
    size: int
    add_bos: bool
    add_eos: bool
    eot_id: int | None
    chat_template: str | None


def write_vocab(
    writer: Any, model_dir: Path, tokenizer: Any, vocab_size: int, pre_override: str | None
) -> VocabInfo:
    """Add the tokenizer keys to `writer`; the tokenizer is the one training used."""
    import gguf

    tokenizer_json = _tokenizer_json(model_dir, tokenizer)
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ModelError(
            f"the tokenizer in {model_dir} is a {model.get('type')} model; GGUF export supports "
            "byte-level BPE (Llama 3, SmolLM, Qwen2) and byte-fallback BPE (Llama 2, Mistral)",
            where=str(model_dir / "tokenizer.json"),
            fix="export a model with one of those tokenizers",
        )
    if max(tokenizer.get_vocab().values()) >= vocab_size:
        raise ModelError(
            f"the tokenizer has ids up to {max(tokenizer.get_vocab().values())} but the model's "
            f"embedding has only {vocab_size} rows",
            where=str(model_dir / "config.json"),
            fix="resize the model's embeddings to the tokenizer (model.resize_token_embeddings)",
        )
    byte_fallback = bool(model.get("byte_fallback"))
    if byte_fallback:
        kind, pre = "llama", None
        tokens, scores, types = _spm_tokens(tokenizer, model, vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer_json))
        special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=vocab_size)
    else:
        kind, pre = "gpt2", pre_override or detect_pre_tokenizer(tokenizer, tokenizer_json)
        tokens, types = _bpe_tokens(tokenizer, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
        if not special.merges:
            raise ModelError(
                "the BPE tokenizer has no merges", where=str(model_dir / "tokenizer.json")
            )
    # Written from the tokenizer object below, so the GGUF states exactly what training used.
    special.chat_template = None
    special.add_special_token = {}
    special.add_to_gguf(writer, quiet=True)
    add_bos, add_eos = _adds_special(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    eot = end_of_turn_id(tokenizer)
    if eot is not None:
        writer.add_eot_token_id(eot)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)
    else:
        template = None
    return VocabInfo(kind, pre, vocab_size, add_bos, add_eos, eot, template)


def detect_pre_tokenizer(tokenizer: Any, tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for this tokenizer's pre-tokenizer: by token hash, then by structure."""
    ids = tokenizer.encode(CHECK_TEXT, add_special_tokens=False)
    known = KNOWN_PRE_HASHES.get(sha256(str(ids).encode()).hexdigest())
    if known is None:
        # llama.cpp hashes `encode` with the tokenizer's default special tokens.
        ids = tokenizer.encode(CHECK_TEXT)
        known = KNOWN_PRE_HASHES.get(sha256(str(ids).encode()).hexdigest())
    if known is not None:
        return known
    structural = _pre_from_structure(tokenizer_json.get("pre_tokenizer"))
    if structural is not None:
        return structural
    raise ModelError(
        "the tokenizer's pre-tokenizer is not one llama.cpp implements under a name we know "
        f"({', '.join(SUPPORTED_PRE)}), so llama.cpp would split text differently",
        where=json.dumps(tokenizer_json.get("pre_tokenizer"))[:200],
        fix="if you know which llama.cpp pre-tokenizer matches, set export.tokenizer_pre "
        "(verification then checks tokenization on hard strings)",
    )


def _pre_from_structure(pre: dict[str, Any] | None) -> str | None:
    steps = _steps(pre)
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        pattern = steps[0].get("pattern", {}).get("Regex")
        return {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}.get(pattern)
    return None


def _bpe_tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            if decoder[i].special or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                types.append(gguf.TokenType.USER_DEFINED)
            tokens.append(token)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _spm_tokens(
    tokenizer: Any, model: dict[str, Any], vocab_size: int
) -> tuple[list[str], list[float], list[int]]:
    import gguf

    # llama.cpp's SentencePiece tokenizer merges the adjacent pair whose union scores
    # highest; a BPE merge list is an order of preference, so rank becomes score.
    rank: dict[str, int] = {}
    for index, merge in enumerate(model.get("merges", [])):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        rank.setdefault(left + right, index)
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    unk = tokenizer.unk_token_id
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1e9)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        scores.append(-float(rank.get(token, 0)) if token in rank else 0.0)
        if i == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif BYTE_TOKEN.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
        elif token in added:
            special = decoder[i].special or _looks_special(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def _adds_space_prefix(tokenizer_json: dict[str, Any]) -> bool:
    """SentencePiece's "▁ before the first word", however tokenizer.json spells it."""
    for step in _steps(tokenizer_json.get("normalizer")) + _steps(
        tokenizer_json.get("pre_tokenizer")
    ):
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") != "never" and step.get(
                "add_prefix_space", True
            )
    return False


def _steps(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not node:
        return []
    children = node.get("normalizers") or node.get("pretokenizers")
    if node.get("type") == "Sequence" and children:
        return [step for child in children for step in _steps(child)]
    return [node]


def _adds_special(tokenizer: Any) -> tuple[bool, bool]:
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template puts right after an assistant message, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "Zq7Xw"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
            tokenize=False,
        )
    except Exception:  # a template that rejects this shape simply has no answer
        return None
    if not isinstance(text, str) or marker not in text:
        return None
    rest = text.split(marker, 1)[1].lstrip(" ")
    ids = tokenizer.encode(rest, add_special_tokens=False)
    if not ids:
        return None
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    return ids[0] if ids[0] in special else None


def _looks_special(token: str) -> bool:
    # Some tokenizers mark control tokens as not special (llama.cpp's converter does the same).
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")


def _tokenizer_json(model_dir: Path, tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's pipeline as loaded, which can differ from its tokenizer.json file.

    transformers picks a tokenizer class by model type and some classes install their own
    pre-tokenizer (Qwen2's splits "\\r\\n" apart from other whitespace), so the file alone
    would describe a tokenizer that training never used.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return json.loads(backend.to_str())
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ModelError(
            f"no tokenizer.json in {model_dir}",
            where=str(model_dir),
            fix="save the tokenizer with a fast (tokenizers) backend: tokenizer.save_pretrained",
        )
    return json.loads(path.read_text(encoding="utf-8"))
