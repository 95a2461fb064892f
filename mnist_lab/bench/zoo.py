"""``bench zoo``: the model-zoo table, one row per preset: what a model costs (parameters,
multiply-adds per image, training time, ONNX latency) beside what it gets (test accuracy of
3 seeds, each checkpoint chosen on validation; mean accuracy over the corruption suite).

Runs are those of ``bench accuracy`` (kept under logs/bench/accuracy, reused when their config
is unchanged), so the table can be filled across sessions and never trains a run twice.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from mnist_lab.bench.timing import QUICK
from mnist_lab.config import compose_train_config
from mnist_lab.data.files import load_split
from mnist_lab.models import count_parameters, multiply_adds
from mnist_lab.training.kept_runs import run_seed, runs_root


def _say(message: str) -> None:
    print(f"zoo       {message}", flush=True)


def onnx_latency_ms(ckpt: str | Path, repeats: int = 300) -> float:
    """Median milliseconds of one image through the exported ONNX graph on one thread (how
    ``serve`` runs it: threads=1), after 20 warm-up calls."""
    import onnxruntime as ort

    from mnist_lab.evaluation.export import Deployable, export_onnx
    from mnist_lab.training.checkpoint import load_net

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        export_onnx(Deployable(load_net(ckpt)[0]), out)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    images = load_split("test")[0][:repeats].unsqueeze(1).float().div(255).numpy()
    times = []
    for i in range(repeats + 20):
        start = time.perf_counter()
        session.run(None, {"input": images[i % repeats : i % repeats + 1]})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[20:])


def corruption_mean(ckpt: str | Path, quick: bool) -> float:
    """Mean accuracy over the corruption suite (docs/robustness.md) on the test set."""
    from mnist_lab.evaluation.loading import load_predictor
    from mnist_lab.evaluation.robustness import run_suite

    images, labels = load_split("test")
    if quick:
        images, labels = images[:500], labels[:500]
    with tempfile.TemporaryDirectory() as tmp:
        return float(run_suite(load_predictor(ckpt), images, labels, Path(tmp))["mean_corrupt_acc"])


def bench_zoo(
    quick: bool,
    presets: Sequence[str],
    seeds: int,
    runs_dir: Path | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """One row per preset; missing runs are trained (``bench accuracy``'s kept runs)."""
    extra = [*extra, *(QUICK if quick else [])]
    with tempfile.TemporaryDirectory() as tmp:
        root = runs_root(runs_dir, quick, tmp)
        table: dict[str, Any] = {}
        for preset in presets:
            net = instantiate(compose_train_config([f"experiment={preset}", *extra]).model)
            runs = [run_seed(preset, seed, root, extra, say=_say) for seed in range(seeds)]
            accs = [r["test/acc"] for r in runs]
            corrupt = [corruption_mean(r["best_ckpt"], quick) for r in runs]
            row = {
                "parameters": count_parameters(net),
                "multiply_adds": multiply_adds(net),
                "seeds": seeds,
                "test_acc": accs,
                "test_acc_mean": statistics.mean(accs),
                "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "train_seconds": [r["train_seconds"] for r in runs],
                "train_seconds_median": statistics.median(r["train_seconds"] for r in runs),
                "precision": sorted({r["precision"] for r in runs}),
                "corrupt_acc": corrupt,
                "corrupt_acc_mean": statistics.mean(corrupt),
                "onnx_ms_per_image": round(onnx_latency_ms(runs[0]["best_ckpt"]), 4),
                "machines": sorted({r["machine"]["class"] for r in runs}),
                "reused": sum(bool(r.get("reused")) for r in runs),
            }
            _say(
                f"{preset}: {row['test_acc_mean']:.2%} ± {row['test_acc_std']:.2%}, "
                f"corruptions {row['corrupt_acc_mean']:.2%}, {row['onnx_ms_per_image']:.3f} ms"
            )
            table[preset] = row
    return table


def zoo_markdown(table: dict[str, Any]) -> str:
    """The README's table."""
    lines = [
        "| preset | parameters | multiply-adds / image | train time (median) | test accuracy "
        "(mean ± std) | corruption suite (mean) | ONNX ms / image (batch 1) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, r in table.items():
        lines.append(
            f"| `{preset}` | {r['parameters']:,} | {r['multiply_adds'] / 1e6:.2f} M | "
            f"{r['train_seconds_median']:.0f} s | {100 * r['test_acc_mean']:.2f} ± "
            f"{100 * r['test_acc_std']:.2f} % ({r['seeds']} seeds) | "
            f"{100 * r['corrupt_acc_mean']:.2f} % | {r['onnx_ms_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"
