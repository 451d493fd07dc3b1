"""`astra doctor`: is this machine ready, and how should it train?"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from astra_tune.errors import DependencyError
from astra_tune.hardware import HardwareInfo, detect_hardware, recommended_dtype
from astra_tune.home import astra_home
from astra_tune.models.catalog import DEFAULT_MODEL, bundled_gguf_path, catalog_entry
from astra_tune.progress import quiet_logger

INSTALL_HINT = "run `make install` in the astra-tune checkout"


@dataclass(frozen=True)
class Check:
    """One line of the report: a component, what was found, and the fix if it is not ok."""

    name: str
    found: str
    ok: bool
    required: bool = True
    fix: str | None = None


@dataclass(frozen=True)
class Package:
    """A Python package the toolkit uses."""

    label: str
    distribution: str
    module: str
    required: bool = True
    # Packages with native code are imported for real: a wheel can install yet fail to load.
    load: bool = False


PACKAGES: tuple[Package, ...] = (
    Package("torch", "torch", "torch", load=True),
    Package("transformers", "transformers", "transformers"),
    Package("peft", "peft", "peft"),
    Package("trl", "trl", "trl"),
    Package("datasets", "datasets", "datasets"),
    Package("accelerate", "accelerate", "accelerate"),
    Package("gguf", "gguf", "gguf"),
    Package("llama-cpp-python", "llama_cpp_python", "llama_cpp", load=True),
    Package("bitsandbytes", "bitsandbytes", "bitsandbytes", required=False),
)


@dataclass(frozen=True)
class DoctorReport:
    """Everything `astra doctor` prints."""

    software: list[Check]
    hardware: HardwareInfo
    home: Path
    home_free_bytes: int
    dtype: str
    dtype_reason: str
    qlora: Check
    default_model: Check

    @property
    def failures(self) -> list[Check]:
        """Required checks that failed; non-empty means the toolkit cannot run."""
        checks = [*self.software, self.default_model]
        return [c for c in checks if c.required and not c.ok]


def run_doctor() -> DoctorReport:
    """Inspect software, hardware and ASTRA_HOME."""
    software = [_python_check(), *(_package_check(p) for p in PACKAGES)]
    hardware = detect_hardware()
    dtype, reason = recommended_dtype(hardware)
    home = astra_home()
    return DoctorReport(
        software=software,
        hardware=hardware,
        home=home,
        home_free_bytes=_free_bytes(home),
        dtype=dtype,
        dtype_reason=reason,
        qlora=_qlora_check(hardware),
        default_model=_default_model_check(),
    )


def _python_check() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 11)
    return Check("Python", version, ok, fix=None if ok else "use Python 3.11 or newer")


def _package_check(package: Package) -> Check:
    fix = f"{INSTALL_HINT} (or `pip install {package.distribution}`)"
    try:
        version = importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return Check(package.label, "not installed", False, package.required, fix)
    if package.load:
        try:
            importlib.import_module(package.module)
        except Exception as exc:  # any failure to load native code means it is unusable
            return Check(
                package.label,
                f"{version}, fails to load: {type(exc).__name__}: {exc}",
                False,
                package.required,
                "reinstall it: "
                f"`pip install --force-reinstall --no-cache-dir {package.distribution}`",
            )
    elif importlib.util.find_spec(package.module) is None:
        return Check(package.label, f"{version}, module missing", False, package.required, fix)
    return Check(package.label, version, True, package.required)


def _qlora_check(hardware: HardwareInfo) -> Check:
    """Quantize a small matrix to NF4 for real: the only trustworthy test of bitsandbytes."""
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return Check(
            "QLoRA (bitsandbytes 4-bit)",
            "bitsandbytes not installed",
            False,
            False,
            "`pip install 'bitsandbytes>=0.50'`",
        )
    try:
        import torch

        with quiet_logger("bitsandbytes"):
            import bitsandbytes.functional as bnbf

        device = "cuda" if hardware.gpus else "cpu"
        weight = torch.randn(64, 64, device=device, dtype=torch.float32)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state)
        error = (restored.float() - weight).abs().mean().item()
    except Exception as exc:  # the reason is the report: shown, not swallowed
        return Check(
            "QLoRA (bitsandbytes 4-bit)",
            f"bitsandbytes {version}: NF4 fails: {type(exc).__name__}: {exc}",
            False,
            False,
            "CPU 4-bit needs bitsandbytes>=0.50; on GPU install the CUDA build of torch",
        )
    ok = error < 0.2
    return Check(
        "QLoRA (bitsandbytes 4-bit)",
        f"usable on {device} (bitsandbytes {version}, NF4 round-trip error {error:.3f})"
        if ok
        else f"NF4 round-trip error {error:.3f} is too large",
        ok,
        False,
    )


def _default_model_check() -> Check:
    entry = catalog_entry(DEFAULT_MODEL)
    assert entry is not None
    try:
        path = bundled_gguf_path(entry)
    except DependencyError as exc:
        return Check(f"default model ({DEFAULT_MODEL})", "not installed", False, True, exc.fix)
    size_mb = path.stat().st_size / 1e6
    return Check(f"default model ({DEFAULT_MODEL})", f"{path.name} ({size_mb:.0f} MB)", True)


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
