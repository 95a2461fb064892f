"""``bench data``: our batched in-memory pipeline vs the torchvision baseline."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mnist_lab.bench.timing import rate
from mnist_lab.data.datamodule import MNISTDataModule
from mnist_lab.data.files import MEAN, RESOURCES, STD

BASELINE_BATCH = 128  # the tutorials' batch size


def bench_data(quick: bool) -> dict[str, Any]:
    """Same augmentation strength on both sides: random rotation of up to ±10°, then normalise.
    The baseline is what the tutorials do: ``datasets.MNIST`` + PIL transforms + ``DataLoader``
    (with 0 and 2 worker processes; the faster one counts)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    n_batches = 30 if quick else 200
    dm = MNISTDataModule(
        batch_size=BASELINE_BATCH,
        augment={"rotate_deg": 10, "translate_frac": 0.0, "scale": [1.0, 1.0]},
    )
    dm.setup()

    def ours() -> int:
        done = 0
        for b, batch in enumerate(dm.train_dataloader()):
            x = dm.transform(batch, train=True)[0]
            done += len(x)
            if b + 1 == n_batches:
                break
        return done

    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name, _ in RESOURCES:  # torchvision extracts into its root: link the official files
            (raw / name).symlink_to(dm.raw_dir / name)
        baseline_set = datasets.MNIST(
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
        baseline_rates = {}
        for workers in (0, 2):
            loader = DataLoader(
                baseline_set, batch_size=BASELINE_BATCH, shuffle=True, num_workers=workers
            )

            def baseline(loader: DataLoader = loader) -> int:
                done = 0
                for b, (x, _) in enumerate(loader):
                    done += len(x)
                    if b + 1 == n_batches:
                        break
                return done

            baseline_rates[workers] = rate(n_batches * BASELINE_BATCH, baseline, 1 if quick else 3)
    ours_rate = rate(n_batches * BASELINE_BATCH, ours, 3 if quick else 5)
    best_baseline = max(baseline_rates.values())
    return {
        "ours_images_per_s": round(ours_rate),
        "torchvision_images_per_s": {
            f"num_workers={k}": round(v) for k, v in baseline_rates.items()
        },
        "ratio": round(ours_rate / best_baseline, 2),
        "batches": n_batches,
        "batch_size": BASELINE_BATCH,
        "note": "ratio against the faster torchvision DataLoader (num_workers 0 or 2)",
    }
