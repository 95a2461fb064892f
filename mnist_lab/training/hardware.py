"""What machine this is, and the precision and memory layout that are fast on it.

A bf16 default that doubles speed on a CPU with native bf16 (AVX512-BF16, AMX) runs many times
slower where bf16 is emulated (AVX2-only CPUs: a bf16 matmul measured at 0.3 vs 110 GFLOP/s in
float32), so ``trainer.precision: auto`` and ``module.channels_last: auto`` are resolved here,
once per run, from the hardware. An explicit value always wins.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch

from mnist_lab.ranks import RankedLogger

log = RankedLogger(__name__)  # DDP: every rank resolves the same; rank zero says so

AUTO = "auto"
# oneDNN ISA names at or above the first level with bf16 instructions (ONEDNN_MAX_CPU_ISA caps
# what oneDNN may use; `ALL` and unset mean no cap).
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL")


def cpu_model() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return name


def cpu_isa() -> str:
    """The vector ISA PyTorch's CPU kernels dispatch to: ``AVX512``, ``AVX2``, ``DEFAULT``...
    (``ATEN_CPU_CAPABILITY=avx2`` lowers it, which is how an AVX2-only CPU is imitated)."""
    return torch.backends.cpu.get_cpu_capability()


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware *and* torch/oneDNN may use it.

    All three must hold: the CPU has AVX512-BF16 or AMX; oneDNN reports bf16 support (false on
    AVX2-only CPUs, or when ``ONEDNN_MAX_CPU_ISA`` caps it below AVX512_CORE_BF16); PyTorch's own
    kernels run at the AVX-512 level. Plain AVX-512 without the BF16 extension only emulates it.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if not any(cap.startswith(isa) for isa in _ONEDNN_BF16_ISAS):
        return False
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(
        hardware and torch.ops.mkldnn._is_mkldnn_bf16_supported() and cpu_isa().startswith("AVX512")
    )


def gpu_bf16() -> bool:
    """Native bf16 on the GPU (Ampere or newer); emulated bf16 (V100, T4) does not count."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def gpu_info() -> dict[str, Any] | None:
    """Name, count and bf16 of the GPUs; None without CUDA. Initialises CUDA (see resolve_auto)."""
    if not torch.cuda.is_available():
        return None
    return {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "bf16": gpu_bf16(),
    }


def machine_info(threads: int | None = None, query_gpu: bool = True) -> dict[str, Any]:
    """The machine block printed at start and written to metrics.json and every benchmark JSON.
    ``query_gpu=False`` leaves CUDA uninitialised (fork-based DDP strategies need that)."""
    import lightning

    isa, bf16 = cpu_isa(), native_cpu_bf16()
    gpu = gpu_info() if query_gpu else None
    return {
        "class": machine_class(isa, bf16, gpu),
        "cpu": cpu_model(),
        "isa": isa,
        "native_bf16": bf16,
        "cores": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "gpu": gpu["name"] if gpu else None,
        "gpu_bf16": gpu["bf16"] if gpu else None,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


def machine_class(isa: str, native_bf16: bool, gpu: dict[str, Any] | None = None) -> str:
    """A short name for tables: ``AVX-512 + native bf16``, ``AVX2, no native bf16``, ``GPU X``."""
    if gpu:
        return f"GPU {gpu['name']}"
    level = "AVX-512" if isa.startswith("AVX512") else isa
    return f"{level} + native bf16" if native_bf16 else f"{level}, no native bf16"


def _on_gpu(accelerator: str) -> bool:
    """Whether the run will use a CUDA GPU (``trainer=gpu`` without one is config.py's error)."""
    return accelerator in ("gpu", "cuda", AUTO) and torch.cuda.is_available()


def net_traits(model_cfg: Any) -> tuple[bool, bool]:
    """What ``auto`` must know about a model family, from class attributes of the net that
    ``model._target_`` names: ``cpu_bf16`` (bf16 autocast is faster than float32 on a
    native-bf16 CPU: true for convolutions, false for the ViT, whose many small matmuls,
    LayerNorms and casts ran at 0.5-0.7x float32's speed: ``bench families``) and
    ``has_convolutions`` (the net has convolutions the NHWC layout speeds up). Both default to
    true; an unknown target gets the defaults too."""
    target = model_cfg.get("_target_") if model_cfg is not None else None
    try:
        from hydra.utils import get_class

        cls = get_class(str(target)) if target else None
    except Exception:  # a bad _target_ is instantiate's error to report, with its config key
        cls = None
    return bool(getattr(cls, "cpu_bf16", True)), bool(getattr(cls, "has_convolutions", True))


def resolve_precision(requested: Any, accelerator: str, cpu_bf16_pays: bool = True) -> str:
    """``auto`` -> GPU: ``bf16-mixed`` where it supports bf16, else ``16-mixed``; CPU:
    ``bf16-mixed`` only with native bf16 and a net that bf16 speeds up (``cpu_bf16_pays``,
    from :func:`net_traits`), else ``32``. Any other value is returned as given."""
    if str(requested) != AUTO:
        return str(requested)
    if _on_gpu(accelerator):
        return "bf16-mixed" if gpu_bf16() else "16-mixed"
    return "bf16-mixed" if native_cpu_bf16() and cpu_bf16_pays else "32"


def resolve_channels_last(
    requested: Any, precision: str, accelerator: str, has_convolutions: bool = True
) -> bool:
    """``auto`` -> on the CPU in both float32 and bf16 (oneDNN's NHWC convolutions: measured by
    ``bench machine``), and on a GPU in 16-bit precision (tensor cores prefer NHWC); off for
    float32 on a GPU (not measured here) and for nets without convolutions (MLP, RNN: nothing
    to speed up). Anything but a bool or ``auto`` is a ValueError."""
    if str(requested) == AUTO:
        pass
    elif isinstance(requested, bool):
        return requested
    else:
        raise ValueError(
            f"module.channels_last={requested}: use auto (the default: from the hardware), "
            "true or false"
        )
    if not has_convolutions:
        return False
    if _on_gpu(accelerator):
        return precision.startswith(("bf16", "16"))
    return True


def emulated_bf16_warning(precision: str, accelerator: str) -> str | None:
    """One line when bf16 was asked for explicitly on a CPU that only emulates it."""
    if not precision.startswith("bf16") or _on_gpu(accelerator) or native_cpu_bf16():
        return None
    return (
        f"trainer.precision={precision} on a CPU without native bf16 ({cpu_isa()}, "
        f"{cpu_model()}): bf16 is emulated here and runs many times slower than float32; "
        "use trainer.precision=auto (resolves to 32 here) or trainer.precision=32"
    )


def resolve_auto(cfg: Any) -> dict[str, Any]:
    """Replace ``trainer.precision: auto`` and ``module.channels_last: auto`` in a run config by
    what suits this machine (in place, so the checkpoint stores the concrete choice) and return
    the choices with the machine block, for the log, ``metrics.json`` and TensorBoard.

    Raises ConfigError for a layout that is not a bool or ``auto``, and for ``auto`` precision
    under a fork-based DDP strategy on a GPU: asking the GPU about bf16 initialises CUDA, after
    which those strategies cannot fork.
    """
    from omegaconf import open_dict

    from mnist_lab.errors import ConfigError

    accelerator = str(cfg.trainer.get("accelerator") or AUTO)
    strategy = str(cfg.trainer.get("strategy") or AUTO)
    asked_precision = cfg.trainer.get("precision")
    asked_layout = cfg.module.get("channels_last", False) if "module" in cfg else False
    forks = _on_gpu(accelerator) and ("fork" in strategy or "notebook" in strategy)
    if forks and str(asked_precision) == AUTO:
        raise ConfigError(
            f"trainer.precision=auto with trainer.strategy={strategy}: detecting the GPU's bf16 "
            "would initialise CUDA before the fork; set trainer.precision=bf16-mixed (Ampere or "
            "newer) or trainer.precision=16-mixed"
        )
    cpu_bf16_pays, has_convolutions = net_traits(cfg.get("model"))
    precision = resolve_precision(asked_precision, accelerator, cpu_bf16_pays)
    try:
        channels_last = resolve_channels_last(
            asked_layout, precision, accelerator, has_convolutions
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    with open_dict(cfg):
        cfg.trainer.precision = precision
        if "module" in cfg:
            cfg.module.channels_last = channels_last
    machine = machine_info(query_gpu=not forks)
    how = {True: "auto", False: "set"}
    log.info(
        "machine: %s (%s, native bf16: %s, GPU: %s) -> trainer.precision=%s (%s), "
        "module.channels_last=%s (%s)",
        machine["cpu"],
        machine["isa"],
        "yes" if machine["native_bf16"] else "no",
        machine["gpu"] or "none",
        precision,
        how[str(asked_precision) == AUTO],
        channels_last,
        how[str(asked_layout) == AUTO],
    )
    warning = emulated_bf16_warning(precision, accelerator)
    if warning and str(asked_precision) != AUTO:
        log.warning(warning)
    return {
        "precision": precision,
        "channels_last": channels_last,
        "requested": {"precision": str(asked_precision), "channels_last": str(asked_layout)},
        "machine": machine,
    }
