"""Clocks shared by the benchmarks: medians over repeats, and GPU-aware synchronisation."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

QUICK = ["debug=tiny"]  # what --quick adds to every training run (conf/debug/tiny.yaml)


def rate(n_images: int, fn: Callable[[], int], repeats: int) -> float:
    """Median images/s over ``repeats`` runs of ``fn`` (which returns the images it processed)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = fn()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def ms_per_call(fn: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)


def sync_fn(device: str) -> Callable[[], None]:
    """Wait for queued GPU work before reading the clock (a no-op on the CPU)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
