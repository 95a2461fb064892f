"""``bench machine``: what this machine is, and which precision and memory layout are fast on it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lab.bench.timing import sync_fn
from mnist_lab.config import compose_train_config
from mnist_lab.training.hardware import net_traits, resolve_channels_last, resolve_precision


def rate_key(precision: str, channels_last: bool) -> str:
    """``32/channels_last``: how ``bench machine`` names a precision x layout."""
    return f"{precision}/{'channels_last' if channels_last else 'contiguous'}"


def matmul_gflops(dtype: torch.dtype, device: str = "cpu", seconds: float = 0.5) -> float:
    """GFLOP/s of square matmuls in ``dtype``. The size adapts so that emulated bf16 (~0.3
    GFLOP/s on AVX2-only CPUs) does not take minutes: one product should last ~0.05-0.2 s."""
    sync = sync_fn(device)
    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)  # warm-up: kernel selection, allocation
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        once = time.perf_counter() - start
        if once > 0.05 or n >= (8192 if device.startswith("cuda") else 2048):
            break
        n *= 2
    iters = max(1, int(seconds / max(once, 1e-6)))
    start = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b)
    sync()
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e9


def train_images_per_s(
    cfg: DictConfig,
    precision: str,
    channels_last: bool,
    quick: bool,
    device: str = "cpu",
    compiled: bool = False,
) -> tuple[float, float]:
    """Training images/s of a run config's net (forward, loss, backward, optimizer step) at its
    batch size, in ``precision`` and memory layout; synthetic batches: compute only. Also the
    seconds of the 3 warm-up steps, which hold the compilation when ``compiled`` (the net
    ``torch.compile``d as ``module.compile=true`` does), outside the timed steps."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = instantiate(cfg.model).to(device=device, memory_format=layout)
    if compiled:
        net.compile()
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.module.label_smoothing)
    batch = int(cfg.data.batch_size)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    sync = sync_fn(device)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = criterion(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    warmup = time.perf_counter() - start
    budget, done = (0.3 if quick else 1.5), 0
    start = time.perf_counter()
    while done < 3 or (time.perf_counter() - start < budget and done < 400):
        step()
        done += 1
    sync()
    return batch * done / (time.perf_counter() - start), warmup


def bench_machine(
    quick: bool, preset: str = "fast", overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """What this machine is and what is fast on it: matmul GFLOP/s per dtype, the preset net's
    training images/s per precision x layout, and what ``auto`` resolves to here."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = "gpu" if device == "cuda" else "cpu"
    cfg = compose_train_config([f"experiment={preset}", *overrides])
    precisions = ["32", "bf16-mixed"] + (["16-mixed"] if device == "cuda" else [])
    matmul = {
        name: round(matmul_gflops(dtype, device, 0.2 if quick else 0.5), 2)
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    }
    rates = {}
    for precision in precisions:
        for channels_last in (False, True):
            key = rate_key(precision, channels_last)
            rates[key] = round(train_images_per_s(cfg, precision, channels_last, quick, device)[0])
    bf16_pays, has_convolutions = net_traits(cfg.model)
    precision = resolve_precision("auto", accelerator, bf16_pays)
    channels_last = resolve_channels_last("auto", precision, accelerator, has_convolutions)
    auto_key = rate_key(precision, channels_last)
    fastest = max(rates, key=rates.__getitem__)
    compiled = None
    if not quick:  # compiling takes tens of seconds: only in the full benchmark
        eager, _ = train_images_per_s(cfg, precision, channels_last, quick, device)
        rate, warmup = train_images_per_s(cfg, precision, channels_last, quick, device, True)
        compiled = {
            "setting": auto_key,
            "eager_images_per_s": round(eager),
            "compiled_images_per_s": round(rate),
            "compiled_vs_eager": round(rate / eager, 3),
            "compile_seconds": round(warmup, 1),  # the 3 warm-up steps: compiling, mostly
        }
    return {
        "device": device,  # native bf16 and the rest: the JSON's machine block
        "matmul_gflops": matmul,
        "bf16_vs_fp32_matmul": round(matmul["bfloat16"] / matmul["float32"], 3),
        "preset": preset,
        "overrides": list(overrides),
        "train_images_per_s": rates,
        "auto": {"precision": precision, "channels_last": channels_last},
        "auto_images_per_s": rates[auto_key],
        "fastest": fastest,
        "auto_vs_fastest": round(rates[auto_key] / rates[fastest], 3),
        "compile": compiled,  # module.compile=true vs eager, at the auto setting (None: --quick)
    }
