"""Load the base model for training: dtype, optional 4-bit base, LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astra_tune.errors import ConfigError, DependencyError
from astra_tune.hardware import detect_hardware, recommended_dtype
from astra_tune.progress import quiet_hf_progress
from astra_tune.recipe import TrainConfig


def resolve_dtype(config: TrainConfig) -> str:
    """The dtype name to train in ('auto' asks the hardware, as `astra doctor` does)."""
    if config.dtype != "auto":
        return config.dtype
    return recommended_dtype(detect_hardware())[0]


def load_model(model_dir: Path, config: TrainConfig, dtype_name: str) -> Any:
    """The model ready for the trainer: full weights, or a PEFT model over a (4-bit) base."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.packing and not torch.cuda.is_available():
        from astra_tune.train.attention import register

        kwargs["attn_implementation"] = register()
    if config.method == "qlora":
        kwargs["quantization_config"] = _four_bit(config, dtype)
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    with quiet_hf_progress():
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False  # no KV cache in training (and packing needs none)
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, peft_config)
    except ValueError as exc:  # PEFT names the modules it could not find
        raise ConfigError(
            f"LoRA cannot be applied: {exc}",
            where="train.lora.target_modules",
            fix="use all-linear, or module names of this architecture (q_proj, v_proj, ...)",
        ) from exc
    if dtype_name != "float32":
        keep_inputs_in_autocast_dtype(peft_model)
    from astra_tune.train.lora import fuse_lora_layers

    fuse_lora_layers(peft_model)
    return peft_model


def keep_inputs_in_autocast_dtype(model: Any) -> None:
    """Stop PEFT casting each adapter's input up to the adapter's fp32 weight dtype.

    Under autocast (how bf16/fp16 runs train) the adapter matmuls run in the low dtype
    anyway, so PEFT's cast makes an fp32 copy of every layer input that autocast then
    casts back: on a bf16 CPU that round trip was a third of the step (bench/train_bench.py).
    The adapter weights and their gradients stay fp32; only the copies go.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def _four_bit(config: TrainConfig, dtype: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise DependencyError(
            "QLoRA needs bitsandbytes", fix="pip install 'bitsandbytes>=0.50'"
        ) from exc
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.qlora.quant_type,
        bnb_4bit_use_double_quant=config.qlora.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
