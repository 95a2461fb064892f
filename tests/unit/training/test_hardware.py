"""Precision and memory layout chosen by the hardware (``auto``), and the machine benchmark.

The resolver is tested with the capability monkeypatched (every branch, on any machine), and
for real in a subprocess that imitates an AVX2-only CPU (``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``): there bf16 must report as emulated, resolve to ``32`` and run slowly.
"""

from __future__ import annotations

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
from tests.helpers import compose_cfg


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
