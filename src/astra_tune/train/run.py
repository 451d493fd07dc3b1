"""`astra train`: fine-tune the base model on prepared data into a run directory.

Order: validate and locate the run -> data (prepared, tokenized, pre-flight checked)
-> model (dtype, 4-bit base, LoRA) -> TRL SFTTrainer (packing, checkpoints, validation,
early stopping, resume) -> outputs (adapter/ or model/, recipe, lineage, metrics, plot).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from astra_tune.atomic import staged_dir, write_text
from astra_tune.errors import ConfigError, DependencyError
from astra_tune.progress import quiet_library_noise
from astra_tune.recipe import Recipe
from astra_tune.runs import RunLayout, run_lock
from astra_tune.train.budget import TimeBudgetCallback, read_plan
from astra_tune.train.callbacks import MetricsCallback, RichProgressCallback, plot_losses
from astra_tune.train.collator import TOKENS_KEY, PackedRowsCollator, pack_examples
from astra_tune.train.dataset import TokenizedSplit, load_and_tokenize, preflight
from astra_tune.train.lineage import build_lineage
from astra_tune.train.loss import labelled_positions_loss
from astra_tune.train.model import load_model, parameter_counts, resolve_dtype
from astra_tune.train.sizing import Sizing, fit_to_data

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainResult:
    """Where the trained weights are and how training went."""

    run_dir: Path
    output_dir: Path
    dtype: str
    trainable_parameters: int
    total_parameters: int
    train_examples: int
    epochs: float
    batch_size: int
    global_step: int
    final_train_loss: float | None
    final_val_loss: float | None


def last_checkpoint(layout: RunLayout) -> Path | None:
    """The newest checkpoint-N directory of a run, or None."""
    found = [
        (int(m.group(1)), path)
        for path in layout.checkpoints.glob("checkpoint-*")
        if (m := CHECKPOINT.match(path.name)) and (path / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


def train_model(
    recipe: Recipe, *, resume: bool = False, console: Console | None = None
) -> TrainResult:
    """Train `recipe` into its run directory; with `resume`, continue from the last checkpoint."""
    layout = RunLayout.for_recipe(recipe)
    with run_lock(layout.root):
        return _train(recipe, layout, resume, console)


def _train(recipe: Recipe, layout: RunLayout, resume: bool, console: Console | None) -> TrainResult:
    config = recipe.train
    run_dir = layout.root
    checkpoint = _starting_point(layout, resume)
    run_dir.mkdir(parents=True, exist_ok=True)

    data_dir = _prepared_data(layout, console)
    tokenizer = _tokenizer(recipe.base_model)
    splits = {
        name: load_and_tokenize(
            layout.split(name),
            tokenizer,
            max_seq_len=config.max_seq_len,
            train_on_prompt=config.train_on_prompt,
        )
        for name in ("train", "val")
        if layout.split(name).is_file() and layout.split(name).stat().st_size
    }
    if "train" not in splits:
        raise ConfigError(f"no train.jsonl in {data_dir}", fix="run `astra data prepare` first")
    preflight(
        splits["train"],
        max_seq_len=config.max_seq_len,
        truncate_ok=config.truncate_ok,
        name="train",
    )
    if "val" in splits:
        preflight(splits["val"], max_seq_len=config.max_seq_len, truncate_ok=True, name="val")

    from astra_tune.models.resolve import resolve_model

    dtype = resolve_dtype(config)
    # Frozen bases may live in the low-precision dtype; trained full weights stay fp32
    # under autocast, or small AdamW updates would vanish in bf16 rounding.
    weights_dtype = "float32" if config.method == "full" or dtype == "float32" else dtype
    base_dir = resolve_model(recipe.base_model, console=console).path
    metrics = MetricsCallback(
        layout.metrics_file, resume_step=_step_of(checkpoint) if resume else 0
    )
    with quiet_library_noise():
        from transformers import set_seed

        # Seed before the adapters exist: LoRA's A matrices are drawn at creation, and
        # the Trainer only seeds later, so unseeded runs would differ from step one.
        set_seed(recipe.seed)
        model = load_model(base_dir, config, weights_dtype)
        trainable, total = parameter_counts(model)
        trainer, sizing = _trainer(recipe, model, tokenizer, splits, dtype, layout, metrics,
                                   resume=resume)  # fmt: skip
        if console is not None:
            console.print(f"training on {sizing.describe()}", highlight=False)
        trainer.train(resume_from_checkpoint=str(checkpoint) if resume and checkpoint else None)
        final_val = trainer.evaluate()["eval_loss"] if "val" in splits else None
    if final_val is not None:
        metrics.on_log(trainer.args, trainer.state, None, {"eval_loss": final_val})

    output = layout.trained
    with staged_dir(output) as staging:
        trainer.save_model(str(staging))
        tokenizer.save_pretrained(staging)
    write_text(layout.recipe_file, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    lineage = build_lineage(recipe, data_dir, dtype=dtype, trainable=trainable, total=total)
    lineage["steps"] = trainer.state.global_step
    lineage["sizing"] = asdict(sizing)
    if (plan := read_plan(layout.budget_file)) is not None:
        lineage["time_budget"] = asdict(plan)
    write_text(layout.lineage_file, json.dumps(lineage, indent=2) + "\n")
    plot_losses(layout.metrics_file, run_dir / "loss.png")
    if recipe.eval.after_training:
        # The evaluation loads its own copies (merged adapter, base); free the trained one.
        trainer.model = model = None
        import gc

        gc.collect()
        lineage["eval"] = _evaluate_run(layout, base_dir, console)
        write_text(layout.lineage_file, json.dumps(lineage, indent=2) + "\n")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainResult(
        run_dir=run_dir,
        output_dir=output,
        dtype=dtype,
        trainable_parameters=trainable,
        total_parameters=total,
        train_examples=len(splits["train"].features),
        epochs=sizing.epochs,
        batch_size=sizing.batch_size,
        global_step=trainer.state.global_step,
        final_train_loss=losses[-1] if losses else None,
        final_val_loss=final_val,
    )


def _starting_point(layout: RunLayout, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses to overwrite a run or resume nothing."""
    run_dir = layout.root
    checkpoint = last_checkpoint(layout)
    if checkpoint is not None and not resume:
        raise ConfigError(
            f"{run_dir} already holds a run (checkpoints up to {checkpoint.name})",
            where=str(run_dir),
            fix="pass --resume to continue it, or give the recipe another name / train.output_dir",
        )
    if resume and checkpoint is None:
        raise ConfigError(
            f"nothing to resume: {run_dir} has no checkpoint",
            where=str(run_dir),
            fix="start the run without --resume",
        )
    assert layout.recipe is not None
    for tracker in layout.recipe.train.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise DependencyError(
                f"train.report_to lists {tracker}, which is not installed",
                fix=f"pip install {tracker}",
            )
    return checkpoint


def _evaluate_run(layout: RunLayout, base_dir: Path, console: Console | None) -> dict[str, Any]:
    """The trained model against its base on the test split (recipe: eval.after_training)."""
    from astra_tune.evaluate.stage import evaluate_model
    from astra_tune.progress import progress_bar

    test = layout.test
    if not test.is_file() or not test.stat().st_size:
        raise ConfigError(
            "eval.after_training is set but the prepared data has no test split",
            where="data.split.test",
            fix="set data.split.test above 0, or eval.after_training: false",
        )
    with progress_bar(console=console) as bar:
        result = evaluate_model(str(layout.trained), test, layout.recipe.eval,
                                against=str(base_dir), out_dir=layout.eval_dir,
                                progress=bar)  # fmt: skip
    scores = result.scores()
    return {"data": str(test), "report": str(layout.eval_dir / "report.html"),
            **{k: scores[k] for k in ("examples", "comparison") if k in scores},
            "scores": scores["model"]["scores"]}  # fmt: skip


def _lean_trainer(base: type) -> type:
    """SFTTrainer whose loss is the model's own cross-entropy, nothing more.

    TRL's compute_loss also works out per-token entropy and top-1 accuracy over the whole
    vocabulary for its logs; on CPU that extra pass over the logits is a sizeable share
    of each step (see bench/train_bench.py), and we do not report those numbers. We go
    further: logits only at the labelled positions (see loss.py).
    """
    from transformers import Trainer

    class LeanSFTTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(
            self,
            model: Any,
            inputs: Any,
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            tokens = inputs.pop(TOKENS_KEY, None)
            if tokens is not None and model.training:
                self.tokens_trained = getattr(self, "tokens_trained", 0) + int(tokens)
            if inputs.get("labels") is None:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            # Accelerate puts autocast around model.forward only; the fused head loss calls
            # the decoder body itself, so it needs the same context around it.
            with self._mixed_precision():
                loss, outputs = labelled_positions_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # As Trainer.compute_loss: the count spans every process, the mean is per process.
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

        def _mixed_precision(self) -> Any:
            import contextlib

            import torch

            if not (self.args.bf16 or self.args.fp16):
                return contextlib.nullcontext()
            dtype = torch.bfloat16 if self.args.bf16 else torch.float16
            return torch.autocast(self.args.device.type, dtype=dtype)

    return LeanSFTTrainer


def _step_of(checkpoint: Path | None) -> int:
    match = CHECKPOINT.match(checkpoint.name) if checkpoint else None
    return int(match.group(1)) if match else 0


def _prepared_data(layout: RunLayout, console: Console | None) -> Path:
    recipe = layout.recipe
    data_dir = layout.data
    if recipe.train.data_dir:
        if not (data_dir / "train.jsonl").is_file():
            raise ConfigError(
                f"train.data_dir {data_dir} holds no train.jsonl",
                where="train.data_dir",
                fix="point it at the output of `astra data prepare`",
            )
        return data_dir
    if not (data_dir / "train.jsonl").is_file():
        if not recipe.data.sources:
            raise ConfigError(
                "no training data: set train.data_dir to prepared data, or list data.sources",
                where="train.data_dir / data.sources",
                fix="e.g. data: {sources: [builtin:orrery]}",
            )
        from astra_tune.data.prepare import prepare_data

        if not (layout.prepared / "train.jsonl").is_file():
            prepare_data(recipe.data, layout.prepared, base_model=recipe.base_model,
                         seed=recipe.seed, console=console)  # fmt: skip
        if recipe.data.augment is not None:
            from astra_tune.data.augment import augment_data

            augment_data(recipe.data.augment, recipe.data, layout.prepared, data_dir,
                         console=console)  # fmt: skip
    return data_dir


def _tokenizer(base_model: str) -> Any:
    from astra_tune.models.resolve import load_tokenizer

    tokenizer = load_tokenizer(base_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _trainer(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    splits: dict[str, TokenizedSplit],
    dtype: str,
    layout: RunLayout,
    metrics: MetricsCallback,
    *,
    resume: bool,
) -> tuple[Any, Sizing]:
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    config = recipe.train
    has_val = "val" in splits
    early = config.early_stopping_patience is not None and has_val
    eval_steps = config.eval_steps
    collator = PackedRowsCollator(tokenizer.pad_token_id) if config.packing else None

    def dataset(split: TokenizedSplit) -> Any:
        if config.packing:
            return Dataset.from_list(pack_examples(split.features, config.max_seq_len))
        return Dataset.from_list(split.features)

    train_rows = dataset(splits["train"])
    sizing = fit_to_data(config, rows=len(train_rows), examples=len(splits["train"].features))
    args = SFTConfig(
        output_dir=str(layout.checkpoints),
        num_train_epochs=sizing.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=sizing.batch_size,
        per_device_eval_batch_size=sizing.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of all steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # TRL turns it on by default; a small model on a CPU has the memory and not the time.
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if has_val and eval_steps else "no",
        eval_steps=eval_steps,
        # Early stopping restores the best checkpoint, which must exist at each validation.
        save_steps=eval_steps if early and eval_steps else config.save_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        use_cpu=not torch.cuda.is_available(),
        report_to=list(config.report_to) or "none",
        # Rows arrive packed by us (see collator.py), so TRL's own packing stays off.
        packing=False,
        max_length=config.max_seq_len,
        remove_unused_columns=False,
        # Validation reports its loss only; gathering its logits would cost memory for nothing.
        prediction_loss_only=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_only_model=False,
    )
    callbacks: list[Any] = [metrics, RichProgressCallback(metrics)]
    if not resume:
        layout.budget_file.unlink(missing_ok=True)  # a plan of an earlier, abandoned start
    if config.max_minutes is not None:
        callbacks.append(TimeBudgetCallback(config.max_minutes, layout.budget_file, resume=resume))
    if early:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=config.early_stopping_patience,
                early_stopping_threshold=config.early_stopping_threshold,
            )
        )
    trainer = _lean_trainer(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=dataset(splits["val"]) if has_val else None,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=callbacks,
    )
    # disable_tqdm swaps the tqdm bar for a callback that prints raw log dicts; ours shows them.
    trainer.remove_callback(PrinterCallback)
    if collator is not None:
        trainer.tokens_trained = 0
        metrics.token_counter = lambda: trainer.tokens_trained
    return trainer, sizing
