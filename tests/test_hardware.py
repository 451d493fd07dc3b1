from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.hardware import GpuInfo, HardwareInfo, detect_hardware, recommended_dtype


def machine(flags: set[str] = frozenset(), gpus=(), mps: bool = False) -> HardwareInfo:
    return HardwareInfo(
        cpu_model="test cpu",
        cpu_flags=frozenset(flags),
        physical_cores=2,
        logical_cores=2,
        ram_total_bytes=8 << 30,
        ram_available_bytes=4 << 30,
        gpus=tuple(gpus),
        mps=mps,
    )


AMPERE = GpuInfo(index=0, name="A100", memory_bytes=80 << 30, bf16=True)
TURING = GpuInfo(index=1, name="T4", memory_bytes=16 << 30, bf16=False)


@pytest.mark.parametrize(
    ("hw", "dtype"),
    [
        (machine({"avx2"}), "float32"),
        (machine({"avx2", "avx512f"}), "float32"),
        (machine({"avx2", "avx512f", "avx512_bf16"}), "bfloat16"),
        (machine({"amx_bf16"}), "bfloat16"),
        (machine({"avx2"}, gpus=[AMPERE]), "bfloat16"),
        (machine({"avx2"}, gpus=[TURING]), "float16"),
        (machine({"avx2"}, gpus=[AMPERE, TURING]), "float16"),
        (machine(mps=True), "float32"),
    ],
)
def test_recommended_dtype(hw: HardwareInfo, dtype: str) -> None:
    chosen, reason = recommended_dtype(hw)
    assert chosen == dtype
    assert reason


def test_feature_properties() -> None:
    hw = machine({"avx2", "avx512f", "avx512_bf16"})
    assert (hw.avx2, hw.avx512, hw.native_bf16) == (True, True, True)
    assert (machine({"sse4_2"}).avx2, machine({"sse4_2"}).native_bf16) == (False, False)


def test_detect_hardware_reads_this_machine() -> None:
    hw = detect_hardware()
    assert hw.logical_cores >= hw.physical_cores >= 1
    assert hw.ram_total_bytes >= hw.ram_available_bytes > 0
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        assert hw.avx2 == (" avx2" in text)
        assert hw.native_bf16 == ("avx512_bf16" in text or "amx_bf16" in text or " bf16" in text)
