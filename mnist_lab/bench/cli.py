"""``python -m mnist_lab.bench``: run the chosen sub-benchmarks, print a table, write the JSON."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import mnist_lab.bench as package
from mnist_lab.bench.accuracy import bench_accuracy
from mnist_lab.bench.augment import bench_augment
from mnist_lab.bench.data import bench_data
from mnist_lab.bench.families import bench_families
from mnist_lab.bench.loop import bench_loop
from mnist_lab.bench.machine import bench_machine, rate_key
from mnist_lab.bench.photos import bench_photos, photos_lines
from mnist_lab.bench.robustness import bench_robustness
from mnist_lab.bench.train_time import bench_time
from mnist_lab.bench.zoo import bench_zoo, zoo_markdown
from mnist_lab.training.hardware import machine_info

PRESETS = [
    "mlp", "lenet_baseline", "cnn", "resnet", "fast", "best", "distilled", "robust", "vit", "rnn",
    "smnist", "psmnist",
]  # fmt: skip
BENCHMARKS = [
    "machine", "families", "data", "loop", "time", "accuracy", "augment", "robustness", "zoo",
    "photos",
]  # fmt: skip
DEFAULT = ["machine", "data", "loop", "time", "accuracy"]  # `bench` without names


def _compile_lines(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    return [
        f"compile   {c['setting']}: eager {c['eager_images_per_s']:,} img/s, torch.compile "
        f"{c['compiled_images_per_s']:,} img/s (x{c['compiled_vs_eager']}) after "
        f"{c['compile_seconds']} s of compiling"
    ]


def _data_lines(d: dict[str, Any]) -> list[str]:
    theirs = max(d["torchvision_images_per_s"].values())
    return [
        f"data      ours {d['ours_images_per_s']:,} img/s vs torchvision {theirs:,} img/s: "
        f"x{d['ratio']}"
    ]


def _loop_lines(lp: dict[str, Any]) -> list[str]:
    per = f"per {lp['batches']} batches: ratio {lp['ratio']}"
    return [
        f"loop      lightning {lp['lightning_s_per_epoch']} s vs plain "
        f"{lp['plain_s_per_epoch']} s {per}"
    ]


def _time_lines(tm: dict[str, Any]) -> list[str]:
    spread = f"{tm['test_acc_mean']:.2%} ± {tm['test_acc_std']:.2%} over {tm['seeds']} seeds"
    lines = [
        f"time      {tm['preset']} ({tm['precision']}): final test acc {spread} (min "
        f"{tm['test_acc_min']:.2%}), median train_seconds {tm['train_seconds_median']:.1f}"
    ]
    for t, s in tm.get("first_crossing_on_test_set", {}).items():
        lines.append(
            f"          first crossing of {float(t):.1%} (chosen on the test set): median "
            f"{s['median_s']} s, reached {s['reached']}"
        )
    return lines


# One summary line (or a few) per sub-benchmark in the result, in this order.
SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "data": _data_lines,
    "loop": _loop_lines,
    "time": _time_lines,
    "photos": photos_lines,
}


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
        lines += _compile_lines(mb.get("compile"))
    for name, row in result.get("families", {}).items():
        rates = row["images_per_s"]
        lines.append(
            f"family    {name:36s} float32 {rates['32']:>6,} img/s, bf16 {rates['bf16-mixed']:>6,} "
            f"(x{row['bf16_vs_fp32']}) -> auto {row['auto']}"
        )
    for key, section in SECTIONS.items():
        if key in result:
            lines += section(result[key])
    for preset, row in result.get("accuracy", {}).items():
        ens = (
            f"{row['ensemble']:.4f}, +TTA {row['ensemble_tta']:.4f} (validation "
            f"{row['ensemble_val']:.4f}, +TTA {row['ensemble_tta_val']:.4f})"
            if "ensemble" in row
            else ""
        )
        if preset == "mix":
            lines.append(f"accuracy  ensemble of {' '.join(row['members'])}: {ens}")
            continue
        ens = f", ensemble {ens}" if ens else ""
        lines.append(
            f"accuracy  {preset:15s} {row['mean']:.4f} ± {row['std']:.4f} ({row['seeds']} seeds, "
            f"median {row['train_seconds_median']:.0f} s){ens}"
        )
    if result.get("zoo"):
        lines.append(f"zoo       ({result['machine']['class']})\n{zoo_markdown(result['zoo'])}")
    if "augment" in result:
        aug, theirs = result["augment"], result["augment"].get("kornia_ms") or {}
        for stage, ms in aug["ours_ms"].items():
            kornia = f", kornia {theirs[stage]:.3f} ms" if stage in theirs else ""
            lines.append(f"augment   {stage:28s} ours {ms:.3f} ms per batch{kornia}")
    for preset, row in result.get("robustness", {}).items():
        ratio = next(v for k, v in row.items() if k.startswith("time_vs_"))
        lines.append(
            f"robust    {preset:10s} clean {row['test_acc_mean']:.2%}, mean over the suite "
            f"{row['mean_corrupt_acc_mean']:.2%}, cross-source "
            f"{row['mean_cross_source_acc_mean']:.2%} ({row['seeds']} seeds), median "
            f"{row['train_seconds_median']:.1f} s ({ratio:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lab.bench",
        description=package.__doc__.split("\n\n")[0],
        epilog="sub-benchmarks" + package.__doc__.split("Sub-benchmarks")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"any of {', '.join(BENCHMARKS)} (default: {' '.join(DEFAULT)})",
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
        help="extra Hydra overrides for the preset of the time, machine and accuracy benchmarks",
    )
    parser.add_argument(
        "--runs",
        default=None,
        help="accuracy: where each preset/seed run trains and keeps its checkpoint; finished "
        "runs with the same config are reused (default logs/bench/accuracy; --quick: a temp dir)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="accuracy: retrain even where a finished run exists"
    )
    parser.add_argument(
        "--mix",
        nargs="+",
        default=[],
        metavar="PRESET:SEEDS",
        help="accuracy: also ensemble these runs of several presets, e.g. best:0,1,2 resnet:0,1 "
        "(trained or reused like the others)",
    )
    parser.add_argument(
        "--photo-seeds",
        nargs="+",
        type=int,
        default=[0, 7],
        help="photos: seeds of the rendered photo sets (default 0 7)",
    )
    parser.add_argument(
        "--model", default=None, help="photos: an .onnx or checkpoint (default: the shipped model)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--out", default="bench.json", help="where to write the JSON (default bench.json)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}"
        )
    benchmarks = args.benchmarks or DEFAULT
    torch.set_num_threads(args.threads)
    os.environ.setdefault("CI", "true")  # no progress bars inside the benchmark
    result: dict[str, Any] = {"machine": machine_info(args.threads), "quick": args.quick}
    seeds = 1 if args.quick else args.seeds
    if "machine" in benchmarks:
        result["machine_bench"] = bench_machine(args.quick, args.preset, args.set)
    if "families" in benchmarks:
        result["families"] = bench_families(args.quick)
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
    if "photos" in benchmarks:
        result["photos"] = bench_photos(args.quick, args.photo_seeds, args.threads, args.model)
    if "zoo" in benchmarks:
        zoo_presets = ["lenet_baseline", "rnn"] if args.quick else args.presets
        result["zoo"] = bench_zoo(
            args.quick, zoo_presets, seeds, Path(args.runs) if args.runs else None, args.set
        )
    if "accuracy" in benchmarks:
        presets = ["lenet_baseline", "fast"] if args.quick else args.presets
        result["accuracy"] = bench_accuracy(
            args.quick,
            presets,
            max(seeds, 2) if args.quick else seeds,
            Path(args.runs) if args.runs else None,
            args.set,
            args.fresh,
            args.mix,
        )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
