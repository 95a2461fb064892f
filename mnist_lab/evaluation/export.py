"""Export a checkpoint to ONNX or TorchScript and prove the copy computes the same thing
(``python -m mnist_lab.export``, ``bench zoo``).

The exported model takes ``input``: float32 ``[N, 1, 28, 28]`` pixels in [0, 1] (white digit on
black, as MNIST) and returns ``logits`` ``[N, 10]``; normalisation is inside the graph, so a
consumer needs no project code and no magic constants. Parity is checked on all 10,000 test
images before the command reports success.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from mnist_lab.data.files import load_split, normalize, to_unit
from mnist_lab.errors import ExportError
from mnist_lab.evaluation.inference import accuracy, predict_proba
from mnist_lab.serving.predictor import onnx_session
from mnist_lab.training.checkpoint import load_net, resolve_checkpoints

for _chatty in ("onnxscript", "onnx_ir", "onnxruntime"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)  # per-pass INFO lines of the exporters

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
MAX_ABS_DIFF = 1e-4  # parity bound on logits between the export and PyTorch


class Deployable(nn.Module):
    """The trained net with MNIST normalisation folded in: [0, 1] pixels in, logits out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.float().eval()

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # named like the graph input
        return self.net(normalize(input))


def _batches(images: torch.Tensor, size: int = 1000):
    for start in range(0, len(images), size):
        yield to_unit(images[start : start + size])


def export_onnx(model: Deployable, out: Path) -> None:
    example = torch.rand(2, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own chatter about its internals
        torch.onnx.export(
            model,
            (example,),
            str(out),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes={"input": {0: torch.export.Dim("batch")}},
            external_data=False,  # one self-contained file
            dynamo=True,
            verbose=False,
        )


def export_torchscript(model: Deployable, out: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        traced = torch.jit.trace(model, torch.rand(2, 1, 28, 28))
        traced.save(str(out))


def onnx_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    """Logits from a plain ``onnxruntime.InferenceSession``: what a consumer would run."""
    session = onnx_session(path)
    return np.concatenate(
        [session.run(["logits"], {"input": x.numpy()})[0] for x in _batches(images)]
    )


def torchscript_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        return torch.cat([loaded(x) for x in _batches(images)]).numpy()


@torch.inference_mode()
def torch_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    return torch.cat([model(x) for x in _batches(images)]).numpy()


def quantize_dynamic(src: Path, dst: Path) -> None:
    """int8 weights via ONNX Runtime's dynamic quantisation (activations quantised on the fly)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_suffix(".prep.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantiser logs one INFO line per tensor on the root logger
    try:
        quant_pre_process(str(src), str(prepared))  # folds BatchNorm into conv weights first
        ort_quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


def _accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return accuracy(torch.from_numpy(logits), labels)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the model, then measure parity and accuracy on the full test set."""
    if cfg.format not in FORMATS:
        raise ExportError(
            f"format={cfg.format} is not supported: use format=onnx or format=torchscript"
        )
    if cfg.quantize not in (None, "dynamic"):
        raise ExportError(
            f"quantize={cfg.quantize} is not supported: use quantize=dynamic or omit it"
        )
    if cfg.quantize and cfg.format != "onnx":
        raise ExportError("quantize=dynamic needs format=onnx (ONNX Runtime does the quantisation)")
    ckpt = resolve_checkpoints(str(cfg.ckpt_path))[0]
    net, _ = load_net(ckpt)
    model = Deployable(net)
    out = Path(cfg.out) if cfg.out else ckpt.with_name("model" + FORMATS[cfg.format])
    out.parent.mkdir(parents=True, exist_ok=True)
    (export_onnx if cfg.format == "onnx" else export_torchscript)(model, out)

    images, labels = load_split("test", cfg.data_dir)
    reference = torch_logits(model, images)
    exported = (onnx_logits if cfg.format == "onnx" else torchscript_logits)(out, images)
    report: dict[str, Any] = {
        "format": cfg.format,
        "out": str(out),
        "ckpt_path": str(ckpt),
        "n_images": len(labels),
        "max_abs_diff": float(np.abs(exported - reference).max()),
        "argmax_agree": int((exported.argmax(1) == reference.argmax(1)).sum()),
        "test/acc_torch": accuracy(predict_proba(net, images), labels),  # what eval reports
        "test/acc": _accuracy(exported, labels),
        "size_bytes": out.stat().st_size,
    }
    if cfg.quantize:
        qout = out.with_name(out.stem + ".int8.onnx")
        quantize_dynamic(out, qout)
        quantized = onnx_logits(qout, images)
        report["quantized"] = {
            "out": str(qout),
            "test/acc": _accuracy(quantized, labels),
            "acc_change": _accuracy(quantized, labels) - report["test/acc"],
            "argmax_agree": int((quantized.argmax(1) == exported.argmax(1)).sum()),
            "size_bytes": qout.stat().st_size,
        }
    out.with_name(out.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    if report["max_abs_diff"] > MAX_ABS_DIFF or report["argmax_agree"] != len(labels):
        raise ExportError(
            f"{out} does not match PyTorch: max |Δlogit| {report['max_abs_diff']:.2e} "
            f"(allowed {MAX_ABS_DIFF:.0e}), same argmax on {report['argmax_agree']}/{len(labels)}"
        )
    return report
