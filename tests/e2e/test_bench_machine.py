"""`bench machine` as a command: what it reports about this CPU and what `auto` picks, also
under an imitated AVX2-only CPU (a cold start: oneDNN and ATen read those variables at import)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mnist_lab.training.hardware import (
    native_cpu_bf16,
    resolve_channels_last,
    resolve_precision,
)
from tests.helpers import run_module

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


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
