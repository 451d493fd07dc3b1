"""What this machine can do: CPU features, memory, accelerators, and the dtype to train in."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

Dtype = Literal["float32", "bfloat16", "float16"]

# x86 flags (Linux /proc/cpuinfo names) and ARM features that mean bf16 math in hardware.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device."""

    index: int
    name: str
    memory_bytes: int
    bf16: bool


@dataclass(frozen=True)
class HardwareInfo:
    """A snapshot of the machine, as `astra doctor` reports it."""

    cpu_model: str
    cpu_flags: frozenset[str]
    physical_cores: int
    logical_cores: int
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)
    mps: bool = False

    @property
    def avx2(self) -> bool:
        return "avx2" in self.cpu_flags

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.cpu_flags

    @property
    def native_bf16(self) -> bool:
        return bool(self.cpu_flags & _BF16_FLAGS)


def detect_hardware() -> HardwareInfo:
    """Inspect the CPU, memory and accelerators (imports torch for CUDA/MPS)."""
    import torch

    memory = psutil.virtual_memory()
    gpus: list[GpuInfo] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=props.name,
                    memory_bytes=props.total_memory,
                    bf16=props.major >= 8,  # Ampere and newer have bf16 tensor cores
                )
            )
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    model, flags = _cpu_model_and_flags()
    return HardwareInfo(
        cpu_model=model,
        cpu_flags=flags,
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total_bytes=memory.total,
        ram_available_bytes=memory.available,
        gpus=tuple(gpus),
        mps=mps,
    )


def recommended_dtype(hw: HardwareInfo) -> tuple[Dtype, str]:
    """The training dtype for this machine and the reason for it."""
    if hw.gpus:
        if all(gpu.bf16 for gpu in hw.gpus):
            return "bfloat16", "CUDA GPU with bf16 support"
        return "float16", "CUDA GPU without bf16 (pre-Ampere): fp16 with loss scaling"
    if hw.mps:
        return "float32", "Apple MPS: fp32 is the reliable choice for training"
    if hw.native_bf16:
        return "bfloat16", "CPU has native bf16 instructions (" + ", ".join(
            sorted(hw.cpu_flags & _BF16_FLAGS)
        ) + ")"
    return "float32", "CPU without native bf16: bf16 would be emulated and far slower"


def _cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model, flags = "", set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in {"model name", "hardware", "cpu model"} and not model:
                model = value.strip()
            elif key in {"flags", "features"} and not flags:
                flags = set(value.split())
        return model or platform.processor() or platform.machine(), frozenset(flags)
    if platform.system() == "Darwin":
        return _darwin_cpu()
    return platform.processor() or platform.machine(), frozenset()


def _darwin_cpu() -> tuple[str, frozenset[str]]:
    def sysctl(name: str) -> str:
        try:
            out = subprocess.run(
                ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""  # sysctl missing or hung: report the CPU as unknown rather than fail
        return out.stdout.strip()

    model = sysctl("machdep.cpu.brand_string") or platform.machine()
    flags = {f.lower() for f in sysctl("machdep.cpu.features").split()}
    if sysctl("hw.optional.arm.FEAT_BF16") == "1":
        flags.add("bf16")
    return model, frozenset(flags)
