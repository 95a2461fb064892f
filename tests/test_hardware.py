"""Precision and memory layout chosen by the hardware (``auto``), and the machine benchmark.

The resolver is tested with the capability monkeypatched (every branch, on any machine), and
for real in a subprocess that imitates an AVX2-only CPU (``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``): there bf16 must report as emulated, resolve to ``32`` and run slowly.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from mnist_lab.training import hardware
from mnist_lab.training.hardware import (
    emulated_bf16_warning,
    native_cpu_bf16,
    resolve_auto,
    resolve_channels_last,
    resolve_precision,
)
from tests.helpers import compose_cfg, run_module

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def cuda(monkeypatch):
    """A machine with a GPU; the test sets whether it supports bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return lambda bf16: monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: bf16)


@pytest.mark.parametrize(("native", "expected"), [(False, "32"), (True, "bf16-mixed")])
def test_auto_on_a_cpu_follows_native_bf16(native, expected, monkeypatch, cpu_only):
    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: native)
    for accelerator in ("cpu", "auto"):
        assert resolve_precision("auto", accelerator) == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_cuda_follows_the_gpu(bf16, expected, cuda, monkeypatch):
    cuda(bf16)
    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: False)  # the CPU does not matter
    for accelerator in ("gpu", "cuda", "auto"):
        assert resolve_precision("auto", accelerator) == expected
    # ...but an explicit CPU run on that machine follows the CPU
    assert resolve_precision("auto", "cpu") == "32"


def test_an_explicit_precision_always_wins(monkeypatch, cpu_only):
    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: True)
    assert resolve_precision("32", "cpu") == "32"
    assert resolve_precision(32, "cpu") == "32"
    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: False)
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_channels_last_auto_and_explicit(cuda):
    assert resolve_channels_last("auto", "32", "cpu") is True
    assert resolve_channels_last("auto", "bf16-mixed", "cpu") is True
    cuda(True)
    assert resolve_channels_last("auto", "bf16-mixed", "gpu") is True
    assert resolve_channels_last("auto", "32", "gpu") is False
    assert resolve_channels_last(False, "bf16-mixed", "cpu") is False
    assert resolve_channels_last(True, "32", "gpu") is True
    with pytest.raises(ValueError, match="true or false"):
        resolve_channels_last("off", "32", "cpu")


def test_native_bf16_matches_the_cpu_flags():
    """With nothing capping the ISA, native bf16 is exactly what /proc/cpuinfo advertises."""
    flags = next(
        line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
    ).split()
    imitated = {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"} & set(os.environ)
    expected = ("avx512_bf16" in flags or "amx_bf16" in flags) and not imitated
    assert native_cpu_bf16() is expected


def test_native_bf16_needs_the_onednn_isa(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert native_cpu_bf16() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # AVX-512 without its bf16 part
    assert native_cpu_bf16() is False


def test_resolve_auto_rewrites_the_config_and_warns_once_for_emulated_bf16(
    monkeypatch, cpu_only, caplog, tmp_path
):
    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: False)
    cfg = compose_cfg(["experiment=fast"], tmp_path, resolved=False)
    assert cfg.trainer.precision == "auto" and cfg.module.channels_last == "auto"
    with caplog.at_level(logging.INFO, logger="mnist_lab.training.hardware"):
        chosen = resolve_auto(cfg)
    assert (cfg.trainer.precision, cfg.module.channels_last) == ("32", True)
    assert chosen["precision"] == "32" and chosen["machine"]["isa"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "trainer.precision=32 (auto)" in caplog.text

    caplog.clear()
    cfg = compose_cfg(["experiment=fast", "trainer.precision=bf16-mixed"], tmp_path, resolved=False)
    with caplog.at_level(logging.INFO, logger="mnist_lab.training.hardware"):
        resolve_auto(cfg)
    assert cfg.trainer.precision == "bf16-mixed"  # explicit wins...
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "emulated" in warnings[0].getMessage()  # ...with one warning
    assert "trainer.precision=32" in warnings[0].getMessage()  # and the fix

    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: True)
    assert emulated_bf16_warning("bf16-mixed", "cpu") is None


def test_every_preset_leaves_precision_and_layout_to_the_hardware(tmp_path):
    for preset in ("fast", "cnn", "resnet", "best", "lenet_baseline", "mlp"):
        cfg = compose_cfg([f"experiment={preset}"], tmp_path, resolved=False)
        assert cfg.trainer.precision == "auto", preset
        assert cfg.module.channels_last == "auto", preset


def _bench_machine(tmp_path, env: dict[str, str] | None = None) -> dict:
    out = tmp_path / "machine.json"
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        proc = run_module("mnist_lab.bench", "machine", "--quick", "--out", str(out), timeout=300)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result = json.loads(out.read_text())
    assert "matmul" in proc.stdout and "auto" in proc.stdout
    return result


@pytest.mark.slow  # bench subprocesses
def test_bench_machine_reports_the_machine_and_what_auto_picks(tmp_path):
    result = _bench_machine(tmp_path)
    machine, bench = result["machine"], result["machine_bench"]
    assert machine["isa"] == torch.backends.cpu.get_cpu_capability()
    assert machine["native_bf16"] == native_cpu_bf16() and machine["cpu"] and machine["class"]
    assert bench["matmul_gflops"]["float32"] > 1 and bench["matmul_gflops"]["bfloat16"] > 0
    rates = bench["train_images_per_s"]
    precisions = (
        ("32", "bf16-mixed", "16-mixed") if torch.cuda.is_available() else ("32", "bf16-mixed")
    )
    assert set(rates) == {
        f"{p}/{layout}" for p in precisions for layout in ("contiguous", "channels_last")
    }
    assert all(r > 0 for r in rates.values())
    precision = resolve_precision("auto", "auto")
    assert bench["auto"] == {
        "precision": precision,
        "channels_last": resolve_channels_last("auto", precision, "auto"),
    }


@pytest.mark.slow  # bench subprocesses
def test_an_avx2_only_cpu_reports_emulated_bf16_and_resolves_to_float32(tmp_path):
    result = _bench_machine(tmp_path, AVX2_ONLY)
    machine, bench = result["machine"], result["machine_bench"]
    assert machine["isa"] == "AVX2" and machine["native_bf16"] is False
    assert bench["auto"]["precision"] == "32"
    # emulated bf16 is many times slower than float32 (0.3 vs 110 GFLOP/s on a real AVX2 VM)
    assert bench["bf16_vs_fp32_matmul"] < 0.5
    rates = bench["train_images_per_s"]
    assert rates["bf16-mixed/channels_last"] < rates["32/channels_last"]
