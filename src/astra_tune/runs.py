"""Where a training run keeps each of its files: the one answer, for every stage.

A run directory holds `recipe.yaml` (the resolved recipe), `lineage.json`,
`metrics.jsonl`, `checkpoints/`, the trained `adapter/` (LoRA, QLoRA) or `model/` (full),
`prepared/` data, `eval/` and `export/`. Two recipe fields move things out of it:
`train.data_dir` (already prepared data, used instead of `prepared/`) and
`export.output_dir`. Eval, export, the pipeline and the CLI all ask a `RunLayout`, so
those fields are honoured everywhere or nowhere.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from astra_tune.errors import ConfigError
from astra_tune.home import runs_dir
from astra_tune.recipe import Recipe, run_recipe

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run, from its recipe."""

    root: Path
    recipe: Recipe | None  # None: a run whose saved recipe is missing or no longer valid

    @classmethod
    def for_recipe(cls, recipe: Recipe) -> RunLayout:
        """The layout a recipe's run has (or will have)."""
        given = recipe.train.output_dir
        root = Path(given) if given else runs_dir() / recipe.name
        return cls(root.expanduser(), recipe)

    @classmethod
    def at(cls, root: Path) -> RunLayout:
        """The run in directory `root`, laid out by the recipe saved in it (if it reads)."""
        return cls(root.expanduser().resolve(), run_recipe(str(root)))

    @classmethod
    def find(cls, spec: str | Path) -> RunLayout | None:
        """The run that `spec` is, or is inside (its adapter/ or model/); None otherwise."""
        recipe = run_recipe(str(spec))
        if recipe is None:
            return None
        given = Path(spec).expanduser()
        root = given if (given / "recipe.yaml").is_file() else given.parent
        return cls(root.resolve(), recipe)

    # -- data ------------------------------------------------------------------------------

    @property
    def prepared(self) -> Path:
        """Where `astra run` / `astra train` prepare the recipe's data.sources."""
        return self.root / "prepared"

    @property
    def augmented(self) -> Path:
        """Where the prepared data goes with data.augment's rewordings added."""
        return self.root / "augmented"

    @property
    def data(self) -> Path:
        """The data the run trains on: train.data_dir, else augmented/ when the recipe
        augments, else prepared/."""
        given = self.recipe.train.data_dir if self.recipe else None
        if given:
            return Path(given).expanduser()
        augments = self.recipe is not None and self.recipe.data.augment is not None
        return self.augmented if augments else self.prepared

    def split(self, name: str) -> Path:
        """One split file (train, val or test) of the run's data."""
        return self.data / f"{name}.jsonl"

    @property
    def test(self) -> Path:
        return self.split("test")

    # -- training ----------------------------------------------------------------------------

    @property
    def trained(self) -> Path:
        """The trained weights: model/ for full fine-tuning, adapter/ otherwise."""
        if self.recipe is None:
            return self.root / ("adapter" if (self.root / "adapter").is_dir() else "model")
        return self.root / ("model" if self.recipe.train.method == "full" else "adapter")

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def lineage_file(self) -> Path:
        return self.root / "lineage.json"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def budget_file(self) -> Path:
        """The step count fitted to train.max_minutes (see train/budget.py)."""
        return self.root / "time_budget.json"

    @property
    def pipeline_file(self) -> Path:
        return self.root / "pipeline.json"

    # -- outputs -----------------------------------------------------------------------------

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def export_dir(self) -> Path:
        """export.output_dir, else export/ inside the run."""
        given = self.recipe.export.output_dir if self.recipe else None
        return Path(given).expanduser().resolve() if given else self.root / "export"


# Roots this process holds, with how deep: `astra run` locks the run, then calls the train
# stage, which locks it again (a second flock of the same file from one process would fail).
_held: dict[Path, int] = {}


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold RUN/.lock while writing a run, so two processes never train into one directory.

    The kernel drops a flock when its process dies, so a killed run leaves nothing to clean up.
    """
    root = root.expanduser().resolve()
    if root in _held:
        _held[root] += 1
        try:
            yield
        finally:
            _held[root] -= 1
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(
                f"run directory {root} is in use by another astra process (pid {holder})",
                where=str(root),
                fix="wait for that run to finish or stop it, or give this recipe another "
                "train.output_dir",
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held[root] = 1
        try:
            yield
        finally:
            del _held[root]
            fcntl.flock(handle, fcntl.LOCK_UN)
