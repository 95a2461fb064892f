"""Export a checkpoint and check its parity on the 10,000 test images:
``python -m mnist_lab.export ckpt_path=PATH format=onnx|torchscript [out=FILE] [quantize=dynamic]``
(:mod:`mnist_lab.evaluation.export`).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import entry_point
from mnist_lab.evaluation.export import export


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@entry_point
def main(cfg: DictConfig) -> None:
    report = export(cfg)
    print(
        f"wrote {report['out']} ({report['size_bytes'] / 1024:.0f} KiB): parity on "
        f"{report['n_images']} test images: max |Δlogit| {report['max_abs_diff']:.2e}, "
        f"same argmax {report['argmax_agree']}/{report['n_images']}"
    )
    if "quantized" in report:
        q = report["quantized"]
        print(
            f"int8 (dynamic) {q['out']} ({q['size_bytes'] / 1024:.0f} KiB): test/acc "
            f"{q['test/acc']:.4f} ({q['acc_change'] * 100:+.2f} points vs fp32)"
        )
    print(f"test/acc: {report['test/acc']:.4f}")


if __name__ == "__main__":
    main()
