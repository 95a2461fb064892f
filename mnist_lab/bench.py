"""Speed and accuracy benchmarks, measured on this machine in one run; writes ``bench.json``.

    python -m mnist_lab.bench                      # all sub-benchmarks, full size
    python -m mnist_lab.bench data loop --quick    # some of them, small
    python -m mnist_lab.bench machine --out machine.json
    python -m mnist_lab.bench time --preset fast --seeds 5
    python -m mnist_lab.bench accuracy --presets mlp cnn --seeds 3

Sub-benchmarks:
  machine   CPU/GPU, ISA, native bf16; matmul GFLOP/s per dtype; the preset net's training
            images/s per precision x layout; what `auto` precision and layout resolve to here
  data      images/s of our batched pipeline vs a torchvision Dataset + PIL + DataLoader one
  loop      seconds/epoch of the Lightning loop vs a plain PyTorch loop, same model and batches
  time      a preset's final test accuracy (mean ± std over seeds) and median train_seconds;
            --crossing adds when test accuracy first crossed 99.0/99.5 % (secondary)
  accuracy  test accuracy mean ± std over seeds per preset (+ ensemble/TTA of the seeds)
  augment   ms per batch of the robust augmentation, per stage, vs kornia's (if installed)
  robustness  presets (default fast, robust) x seeds: clean and corruption-suite accuracy,
            train seconds and the time ratio to the first preset
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lab.callbacks import TimeToAccuracy
from mnist_lab.checkpoint import load_net
from mnist_lab.config import compose_train_config
from mnist_lab.data import MEAN, RESOURCES, STD, MNISTDataModule
from mnist_lab.hardware import (
    machine_info,
    resolve_auto,
    resolve_channels_last,
    resolve_precision,
)
from mnist_lab.inference import accuracy, predict_proba
from mnist_lab.train import build_module, train

PRESETS = ["mlp", "lenet_baseline", "cnn", "resnet", "fast", "best", "robust"]
SEED_STYLE_BATCH = 128
# Quick mode: a few batches of everything, to check the machinery (numbers are meaningless).
QUICK_TRAIN = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=1",
]


def _rate(n_images: int, fn: Callable[[], int], repeats: int) -> float:
    """Median images/s over ``repeats`` runs of ``fn`` (which returns the images it processed)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = fn()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_data(quick: bool) -> dict[str, Any]:
    """Same augmentation strength on both sides: random rotation of up to ±10°, then normalise."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    n_batches = 30 if quick else 200
    dm = MNISTDataModule(
        batch_size=SEED_STYLE_BATCH,
        augment={"rotate_deg": 10, "translate_frac": 0.0, "scale": [1.0, 1.0]},
    )
    dm.setup()

    def ours() -> int:
        done = 0
        for b, batch in enumerate(dm.train_dataloader()):
            x, _ = dm.transform(batch, train=True)
            done += len(x)
            if b + 1 == n_batches:
                break
        return done

    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name, _ in RESOURCES:  # torchvision extracts into its root: link the official files
            (raw / name).symlink_to(dm.raw_dir / name)
        seed_set = datasets.MNIST(
            root,
            train=True,
            download=True,
            transform=transforms.Compose(
                [
                    transforms.RandomRotation(10),
                    transforms.ToTensor(),
                    transforms.Normalize((MEAN,), (STD,)),
                ]
            ),
        )
        seed_rates = {}
        for workers in (0, 2):
            loader = DataLoader(
                seed_set, batch_size=SEED_STYLE_BATCH, shuffle=True, num_workers=workers
            )

            def seed_style(loader: DataLoader = loader) -> int:
                done = 0
                for b, (x, _) in enumerate(loader):
                    done += len(x)
                    if b + 1 == n_batches:
                        break
                return done

            seed_rates[workers] = _rate(n_batches * SEED_STYLE_BATCH, seed_style, 1 if quick else 3)
    ours_rate = _rate(n_batches * SEED_STYLE_BATCH, ours, 3 if quick else 5)
    best_seed = max(seed_rates.values())
    return {
        "ours_images_per_s": round(ours_rate),
        "seed_style_images_per_s": {f"num_workers={k}": round(v) for k, v in seed_rates.items()},
        "ratio": round(ours_rate / best_seed, 2),
        "batches": n_batches,
        "batch_size": SEED_STYLE_BATCH,
        "note": "ratio against the faster seed-style DataLoader (num_workers 0 or 2)",
    }


def bench_loop(quick: bool, preset: str = "fast") -> dict[str, Any]:
    """One epoch of the same net, optimizer, schedule and batches, Lightning vs a plain loop.

    Both run the module's own training step (forward, loss, torchmetrics accumulation), so the
    difference is the loop machinery: hooks, logging, optimizer closure, batch transfer.
    """
    repeats = 2 if quick else 5
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            "logger=none",
            "callbacks=none",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
        ]
        if quick:
            overrides.append("trainer.limit_train_batches=50")
        cfg = compose_train_config([f"experiment={preset}", *overrides], out)
        resolve_auto(cfg)  # the precision and layout `train` would use on this machine
        dm: MNISTDataModule = instantiate(cfg.data)
        dm.setup()
        limit = cfg.trainer.limit_train_batches
        n_batches = len(dm.train_dataloader()) if limit is None else int(limit)
        L.seed_everything(0, verbose=False)
        template = build_module(cfg)

        def plain() -> float:
            module = copy.deepcopy(template)
            opt = module.build_optimization(total_steps=n_batches)
            optimizer, sched = opt["optimizer"], opt.get("lr_scheduler", {}).get("scheduler")
            autocast = torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled="bf16" in str(cfg.trainer.precision)
            )
            module.train()
            start = time.perf_counter()
            loader = dm.train_dataloader()
            for b, batch in enumerate(loader):
                if b == n_batches:
                    break
                x, y = dm.transform(batch, train=True)
                with autocast:  # the module's own step: forward, loss, metric accumulation
                    loss, _ = module._shared_step((x, y), "train")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if sched is not None:
                    sched.step()
            return time.perf_counter() - start

        class EpochClock(L.Callback):
            """The epoch itself: Trainer start-up (once per fit) is reported apart."""

            def on_train_epoch_start(
                self, trainer: L.Trainer, pl_module: L.LightningModule
            ) -> None:
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
                self.seconds = time.perf_counter() - self.start

        fit_seconds: list[float] = []

        def lightning() -> float:
            module = copy.deepcopy(template)
            clock = EpochClock()
            trainer = instantiate(
                cfg.trainer,
                callbacks=[clock],
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
            )
            start = time.perf_counter()
            trainer.fit(module, datamodule=dm)
            fit_seconds.append(time.perf_counter() - start)
            return clock.seconds

        times: dict[str, list[float]] = {"plain": [], "lightning": []}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            times["plain"].append(plain())
            times["lightning"].append(lightning())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "preset": preset,
        "batches": n_batches,
        "plain_s_per_epoch": round(med["plain"], 3),
        "lightning_s_per_epoch": round(med["lightning"], 3),
        "ratio": round(med["lightning"] / med["plain"], 3),
        "lightning_fit_s": round(statistics.median(fit_seconds), 3),
        "note": "epoch time; lightning_fit_s adds Trainer start-up and teardown (once per run)",
        "runs": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


def _sync(device: str) -> Callable[[], None]:
    """Wait for queued GPU work before reading the clock (a no-op on the CPU)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def rate_key(precision: str, channels_last: bool) -> str:
    """``32/channels_last``: how ``bench machine`` names a precision x layout."""
    return f"{precision}/{'channels_last' if channels_last else 'contiguous'}"


def matmul_gflops(dtype: torch.dtype, device: str = "cpu", seconds: float = 0.5) -> float:
    """GFLOP/s of square matmuls in ``dtype``. The size adapts so that emulated bf16 (~0.3
    GFLOP/s on AVX2-only CPUs) does not take minutes: one product should last ~0.05-0.2 s."""
    sync = _sync(device)
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
    cfg: DictConfig, precision: str, channels_last: bool, quick: bool, device: str = "cpu"
) -> float:
    """Training images/s of a run config's net (forward, loss, backward, optimizer step) at its
    batch size, in ``precision`` and memory layout; synthetic batches: compute only."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = instantiate(cfg.model).to(device=device, memory_format=layout)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.module.label_smoothing)
    batch = int(cfg.data.batch_size)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    sync = _sync(device)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = criterion(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync()
    budget, done = (0.3 if quick else 1.5), 0
    start = time.perf_counter()
    while done < 3 or (time.perf_counter() - start < budget and done < 400):
        step()
        done += 1
    sync()
    return batch * done / (time.perf_counter() - start)


def bench_machine(quick: bool, preset: str = "fast", overrides: list[str] = ()) -> dict[str, Any]:
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
            rates[key] = round(train_images_per_s(cfg, precision, channels_last, quick, device))
    precision = resolve_precision("auto", accelerator)
    channels_last = resolve_channels_last("auto", precision, accelerator)
    auto_key = rate_key(precision, channels_last)
    fastest = max(rates, key=rates.get)
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
    }


def bench_time(
    quick: bool, preset: str, seeds: int, overrides: list[str] = (), crossing: bool = False
) -> dict[str, Any]:
    """The preset's fixed schedule, run to its end for each seed: *final* test accuracy (of the
    checkpoint chosen on validation) and ``train_seconds`` (fit wall time, validation included).

    ``crossing`` also evaluates the test set every 50 steps and records when it first crossed
    99.0 / 99.5 %: a number chosen on the test set, kept only as a secondary column. Its
    evaluations are subtracted from ``train_seconds`` but still cost wall time.
    """
    targets = (0.99, 0.995)
    runs = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as out:
            extra = [f"seed={seed}", "logger=none", *(QUICK_TRAIN if quick else []), *overrides]
            cfg = compose_train_config([f"experiment={preset}", *extra], out)
            clock = None
            if crossing:
                dm = MNISTDataModule(data_dir=cfg.data.data_dir)
                dm.setup("test")
                clock = TimeToAccuracy(
                    *dm.tensors["test"],
                    targets=targets,
                    every_n_steps=25 if quick else 50,
                    stop_at_targets=False,  # the final accuracy is the result: run to the end
                )
            metrics = train(cfg, extra_callbacks=[clock] if clock else None)
        run: dict[str, Any] = {
            "seed": seed,
            "test_acc": metrics["test/acc"],
            "val_acc_best": metrics["val/acc_best"],
            "train_seconds": metrics["train_seconds"],
            "epochs": metrics["epochs"],
            "global_steps": metrics["global_steps"],
            "precision": metrics["precision"],
            "channels_last": metrics["channels_last"],
        }
        if clock is not None:
            run["train_seconds"] = round(metrics["train_seconds"] - clock.eval_seconds, 3)
            run["first_crossing_on_test_set"] = {f"{t:.3f}": clock.reached.get(t) for t in targets}
            run["crossing_eval_seconds"] = round(clock.eval_seconds, 2)
            run["history"] = clock.history
        runs.append(run)
    accs = [r["test_acc"] for r in runs]
    secs = [r["train_seconds"] for r in runs]
    result: dict[str, Any] = {
        "preset": preset,
        "overrides": list(overrides),
        "seeds": seeds,
        "precision": runs[0]["precision"],
        "channels_last": runs[0]["channels_last"],
        "test_acc_mean": statistics.mean(accs),
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "test_acc_min": min(accs),
        "train_seconds_median": statistics.median(secs),
        "train_seconds_min": min(secs),
        "train_seconds_max": max(secs),
        "runs": runs,
    }
    if crossing:
        summary = {}
        for t in targets:
            key = f"{t:.3f}"
            hit = [
                r["first_crossing_on_test_set"][key]["train_seconds"]
                for r in runs
                if r["first_crossing_on_test_set"][key]
            ]
            summary[key] = {
                "reached": f"{len(hit)}/{len(runs)}",
                "median_s": round(statistics.median(hit), 2) if len(hit) == len(runs) else None,
            }
        result["first_crossing_on_test_set"] = summary
    return result


def _ms_per_call(fn: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)


def bench_augment(quick: bool, batch_size: int = 96) -> dict[str, Any]:
    """ms per training batch of the robust augmentation (conf/data/augment/robust.yaml), per
    stage and in all, against kornia's nearest equivalents when kornia is installed
    (``pip install kornia``; not a dependency)."""
    from omegaconf import OmegaConf

    from mnist_lab.augment import Augment
    from mnist_lab.config import CONFIG_DIR
    from mnist_lab.data import make_augment

    options = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "data/augment/robust.yaml"))
    robust = make_augment(options)
    repeats = 10 if quick else 100
    dm = MNISTDataModule()
    dm.setup()
    x = dm.tensors["train"][0][:batch_size].unsqueeze(1).float() / 255
    half = x[: round(robust.degrade_p * batch_size)]  # the share the photometric stages get
    g = torch.Generator().manual_seed(0)
    shape_keys = ("rotate_deg", "translate_frac", "scale", "shear_deg", "elastic_px")
    geometry = Augment(**{k: options[k] for k in shape_keys})
    ours = {"geometry (affine + elastic)": _ms_per_call(lambda: geometry(x, g), repeats)}
    every = torch.ones(len(half), 1, 1, 1)  # each stage timed on the whole degraded share
    for _, stage in robust._stages():
        ours[stage.__name__.strip("_")] = _ms_per_call(lambda s=stage: s(half, g, every), repeats)
    ours["all (robust.yaml)"] = _ms_per_call(lambda: robust(x, g), repeats)
    result: dict[str, Any] = {"batch_size": batch_size, "ours_ms": ours}
    try:
        import kornia
        import kornia.augmentation as K
    except ImportError:
        result["kornia_ms"] = None
        return result
    k_geometry = K.RandomAffine(
        degrees=options["rotate_deg"],
        translate=(options["translate_frac"],) * 2,
        scale=tuple(options["scale"]),
        shear=options["shear_deg"],
        p=1.0,
    )
    k_elastic = K.RandomElasticTransform(p=1.0)
    blur = K.RandomGaussianBlur((7, 7), (0.3, 1.5), p=1.0)
    light = K.AugmentationSequential(
        K.RandomContrast((0.25, 1.0), p=1.0), K.RandomBrightness((1.0, 1.5), p=1.0)
    )
    noise = K.AugmentationSequential(
        K.RandomGaussianNoise(std=0.3, p=1.0), K.RandomSaltAndPepperNoise(amount=0.15, p=1.0)
    )
    erase = K.RandomErasing((0.02, 0.15), p=1.0)
    kernel = torch.ones(3, 3)
    theirs = {
        "geometry (affine + elastic)": _ms_per_call(lambda: k_elastic(k_geometry(x)), repeats),
        "stroke": _ms_per_call(lambda: kornia.morphology.dilation(half, kernel), repeats),
        "blur": _ms_per_call(lambda: blur(half), repeats),
        "light": _ms_per_call(lambda: light(half), repeats),
        "noise": _ms_per_call(lambda: noise(half), repeats),
        "erase": _ms_per_call(lambda: erase(half), repeats),
    }
    result["kornia_ms"] = theirs
    result["kornia_version"] = kornia.__version__
    return result


def bench_accuracy(quick: bool, presets: list[str], seeds: int) -> dict[str, Any]:
    """Test accuracy per preset over seeds; the model is always chosen on validation accuracy."""
    table = {}
    for preset in presets:
        accs, secs, ckpts = [], [], []
        with tempfile.TemporaryDirectory() as out:
            for seed in range(seeds):
                cfg = compose_train_config(
                    [f"experiment={preset}", f"seed={seed}", "logger=none"]
                    + (QUICK_TRAIN if quick else []),
                    Path(out) / str(seed),
                )
                metrics = train(cfg)
                accs.append(metrics["test/acc"])
                secs.append(metrics["train_seconds"])
                ckpts.append(metrics["best_ckpt"])
            row: dict[str, Any] = {
                "seeds": seeds,
                "test_acc": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "train_seconds_median": statistics.median(secs),
            }
            if len(ckpts) > 1 and all(ckpts):
                row.update(_ensemble(ckpts))
        table[preset] = row
    return table


def bench_robustness(quick: bool, presets: list[str], seeds: int) -> dict[str, Any]:
    """Each preset trained per seed (interleaved, so machine drift hits all alike), then the
    corruption suite on the test set: clean and mean-over-suite accuracy, train seconds, and
    each preset's train time relative to the first preset's, seed by seed."""
    from mnist_lab.inference import Predictor
    from mnist_lab.robustness import run_suite

    dm = MNISTDataModule()
    dm.setup("test")
    images, labels = dm.tensors["test"]
    if quick:
        images, labels = images[:500], labels[:500]
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in presets}
    for seed in range(seeds):
        for preset in presets:
            with tempfile.TemporaryDirectory() as out:
                overrides = [f"experiment={preset}", f"seed={seed}", "logger=none"]
                cfg = compose_train_config(overrides + (QUICK_TRAIN if quick else []), out)
                metrics = train(cfg)
                suite = run_suite(
                    Predictor(metrics["best_ckpt"]), images, labels, Path(out) / "robustness"
                )
            runs[preset].append(
                {
                    "seed": seed,
                    "test_acc": metrics["test/acc"],
                    "train_seconds": metrics["train_seconds"],
                    "precision": metrics["precision"],
                    "mean_corrupt_acc": suite["mean_corrupt_acc"],
                    "corruptions": suite["corruptions"],
                }
            )
    base = presets[0]
    table = {}
    for preset, rows in runs.items():
        names = list(rows[0]["corruptions"])
        table[preset] = {
            "seeds": seeds,
            "test_acc_mean": statistics.mean(r["test_acc"] for r in rows),
            "mean_corrupt_acc_mean": statistics.mean(r["mean_corrupt_acc"] for r in rows),
            "corruptions_mean": {
                n: round(statistics.mean(r["corruptions"][n] for r in rows), 5) for n in names
            },
            "train_seconds_median": statistics.median(r["train_seconds"] for r in rows),
            f"time_vs_{base}_median": round(
                statistics.median(
                    r["train_seconds"] / b["train_seconds"]
                    for r, b in zip(rows, runs[base], strict=True)
                ),
                3,
            ),
            "runs": rows,
        }
    return table


def _ensemble(ckpts: list[str]) -> dict[str, float]:
    dm = MNISTDataModule()
    dm.setup("test")
    images, labels = dm.tensors["test"]
    nets = [load_net(c)[0] for c in ckpts]
    out = {}
    for tta in (False, True):
        probs = sum(predict_proba(net, images, tta=tta) for net in nets)
        out["ensemble_tta" if tta else "ensemble"] = accuracy(probs, labels)
    return out


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"machine: {m['class']} | {m['cpu']}, ISA {m['isa']}, native bf16 "
        f"{'yes' if m['native_bf16'] else 'no'}, GPU {m['gpu'] or 'none'}, "
        f"{m['torch_threads']} threads, torch {m['torch']}"
    ]
    if "machine_bench" in result:
        mb = result["machine_bench"]
        mm = mb["matmul_gflops"]
        lines.append(
            f"matmul    float32 {mm['float32']:.1f} GFLOP/s, bfloat16 {mm['bfloat16']:.1f} GFLOP/s "
            f"(x{mb['bf16_vs_fp32_matmul']})"
        )
        auto = mb["auto"]
        auto_key = rate_key(auto["precision"], auto["channels_last"])
        for key, rate in mb["train_images_per_s"].items():
            mark = " <- auto" if key == auto_key else ""
            lines.append(f"train     {mb['preset']} {key:26s} {rate:>8,} img/s{mark}")
        lines.append(
            f"auto      precision={mb['auto']['precision']} channels_last="
            f"{mb['auto']['channels_last']} ({mb['auto_vs_fastest']:.0%} of the fastest, "
            f"{mb['fastest']})"
        )
    if "data" in result:
        d = result["data"]
        lines.append(
            f"data      ours {d['ours_images_per_s']:,} img/s vs seed-style "
            f"{max(d['seed_style_images_per_s'].values()):,} img/s: x{d['ratio']}"
        )
    if "loop" in result:
        lp = result["loop"]
        lines.append(
            f"loop      lightning {lp['lightning_s_per_epoch']} s vs plain "
            f"{lp['plain_s_per_epoch']} s per {lp['batches']} batches: ratio {lp['ratio']}"
        )
    if "time" in result:
        tm = result["time"]
        lines.append(
            f"time      {tm['preset']} ({tm['precision']}): final test acc "
            f"{tm['test_acc_mean']:.2%} ± {tm['test_acc_std']:.2%} over {tm['seeds']} seeds "
            f"(min {tm['test_acc_min']:.2%}), median train_seconds {tm['train_seconds_median']:.1f}"
        )
        for t, s in tm.get("first_crossing_on_test_set", {}).items():
            lines.append(
                f"          first crossing of {float(t):.1%} (chosen on the test set): median "
                f"{s['median_s']} s, reached {s['reached']}"
            )
    for preset, row in result.get("accuracy", {}).items():
        ens = (
            f", ensemble {row['ensemble']:.4f}, +TTA {row['ensemble_tta']:.4f}"
            if "ensemble" in row
            else ""
        )
        lines.append(
            f"accuracy  {preset:15s} {row['mean']:.4f} ± {row['std']:.4f} ({row['seeds']} seeds, "
            f"median {row['train_seconds_median']:.0f} s){ens}"
        )
    if "augment" in result:
        aug, theirs = result["augment"], result["augment"].get("kornia_ms") or {}
        for stage, ms in aug["ours_ms"].items():
            kornia = f", kornia {theirs[stage]:.3f} ms" if stage in theirs else ""
            lines.append(f"augment   {stage:28s} ours {ms:.3f} ms per batch{kornia}")
    for preset, row in result.get("robustness", {}).items():
        ratio = next(v for k, v in row.items() if k.startswith("time_vs_"))
        lines.append(
            f"robust    {preset:10s} clean {row['test_acc_mean']:.2%}, mean over the suite "
            f"{row['mean_corrupt_acc_mean']:.2%} ({row['seeds']} seeds), median "
            f"{row['train_seconds_median']:.1f} s ({ratio:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lab.bench",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("Sub-benchmarks:")[1]
        and "sub-benchmarks:" + __doc__.split("Sub-benchmarks:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmarks",
        nargs="*",
        choices=[[], "machine", "data", "loop", "time", "accuracy", "augment", "robustness"],
        help="which to run (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings (< 3 min): checks the machinery"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds for time and accuracy (default 3)"
    )
    parser.add_argument(
        "--preset", default="fast", help="preset for the time benchmark (default fast)"
    )
    parser.add_argument(
        "--crossing",
        action="store_true",
        help="time: also record when test accuracy first crossed 99.0/99.5 %% (evaluates the "
        "test set every 50 steps; a number chosen on the test set, secondary only)",
    )
    parser.add_argument(
        "--loop-preset", default="fast", help="preset for the loop benchmark (default fast)"
    )
    parser.add_argument(
        "--presets", nargs="+", default=PRESETS, choices=PRESETS, help="accuracy presets"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra overrides for the preset of the time and machine benchmarks",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--out", default="bench.json", help="where to write the JSON (default bench.json)"
    )
    args = parser.parse_args(argv)
    benchmarks = args.benchmarks or ["machine", "data", "loop", "time", "accuracy"]
    torch.set_num_threads(args.threads)
    os.environ.setdefault("CI", "true")  # no progress bars inside the benchmark
    result: dict[str, Any] = {"machine": machine_info(args.threads), "quick": args.quick}
    seeds = 1 if args.quick else args.seeds
    if "machine" in benchmarks:
        result["machine_bench"] = bench_machine(args.quick, args.preset, args.set)
    if "data" in benchmarks:
        result["data"] = bench_data(args.quick)
    if "loop" in benchmarks:
        result["loop"] = bench_loop(args.quick, args.loop_preset)
    if "time" in benchmarks:
        result["time"] = bench_time(args.quick, args.preset, seeds, args.set, args.crossing)
    if "augment" in benchmarks:
        result["augment"] = bench_augment(args.quick)
    if "robustness" in benchmarks:
        robust_presets = args.presets if args.presets != PRESETS else ["fast", "robust"]
        result["robustness"] = bench_robustness(args.quick, robust_presets, seeds)
    if "accuracy" in benchmarks:
        presets = ["lenet_baseline", "fast"] if args.quick else args.presets
        result["accuracy"] = bench_accuracy(
            args.quick, presets, max(seeds, 2) if args.quick else seeds
        )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
