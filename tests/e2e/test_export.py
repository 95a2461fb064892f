"""Export to ONNX / TorchScript: parity with PyTorch on the real test set, plain-runtime loading."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnist_lab.data.files import normalize
from mnist_lab.training.checkpoint import load_net, resolve_checkpoints
from tests.helpers import run_module

pytestmark = pytest.mark.slow  # a trained model, exported and checked on all 10,000 test images


def test_onnx_runs_in_a_plain_session_with_parity(onnx_export, good_run, datamodule):
    """Acceptance: the .onnx loads in onnxruntime with no project code; on all 10,000 test
    images its logits match PyTorch's within 1e-4 with the same argmax."""
    out, proc = onnx_export
    assert proc.stdout.strip().splitlines()[-1].startswith("test/acc: ")
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    assert inp.name == "input" and [o.name for o in model.graph.output] == ["logits"]
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [1, 28, 28]

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images, labels = datamodule.tensors["test"]
    x = images.unsqueeze(1).float().div(255)  # raw [0, 1] pixels: normalisation is in the graph
    got = np.concatenate([session.run(["logits"], {"input": b.numpy()})[0] for b in x.split(1000)])
    assert got.shape == (10_000, 10)
    net, _ = load_net(resolve_checkpoints(str(good_run))[0])
    with torch.inference_mode():
        want = torch.cat([net.float()(normalize(b)) for b in x.split(1000)]).numpy()
    assert np.abs(got - want).max() <= 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()
    assert (got.argmax(1) == labels.numpy()).mean() > 0.98
    # Dynamic batch: one image and an odd batch size both work.
    assert session.run(None, {"input": x[:1].numpy()})[0].shape == (1, 10)
    assert session.run(None, {"input": x[:7].numpy()})[0].shape == (7, 10)

    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert report["argmax_agree"] == 10_000 and report["max_abs_diff"] <= 1e-4


def test_dynamic_quantization_reports_accuracy_change(onnx_export):
    out, proc = onnx_export
    report = json.loads(out.with_name(out.name + ".json").read_text())
    q = report["quantized"]
    quantized = out.with_name("digits.int8.onnx")
    assert q["out"] == str(quantized) and quantized.is_file()
    assert q["size_bytes"] < report["size_bytes"] / 2  # int8 weights
    assert abs(q["acc_change"] - (q["test/acc"] - report["test/acc"])) < 1e-9
    assert abs(q["acc_change"]) < 0.01
    assert "points vs fp32" in proc.stdout
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    assert session.run(["logits"], {"input": np.zeros((3, 1, 28, 28), np.float32)})[0].shape == (
        3,
        10,
    )


def test_torchscript_export_defaults_beside_the_checkpoint(good_run, datamodule, tmp_path):
    run_module(
        "mnist_lab.export",
        f"ckpt_path={good_run}",
        "format=torchscript",
        f"hydra.run.dir={tmp_path}",
    )
    ckpt = resolve_checkpoints(str(good_run))[0]
    out = ckpt.with_name("model.pt")
    assert out.is_file()
    loaded = torch.jit.load(str(out))
    x = datamodule.tensors["test"][0][:64].unsqueeze(1).float().div(255)
    net, _ = load_net(ckpt)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), net.float()(normalize(x)), atol=1e-4)


def test_bad_export_options_get_one_clear_error(good_run, tmp_path):
    proc = run_module(
        "mnist_lab.export",
        f"ckpt_path={good_run}",
        "format=tflite",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 1
    assert "format=tflite is not supported: use format=onnx or format=torchscript" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_load_predictor_gives_the_same_probabilities_from_checkpoint_and_onnx(
    onnx_export, good_run, datamodule
):
    """One interface, two runtimes: PyTorch for a run directory, ONNX Runtime for the export."""
    from mnist_lab.evaluation.inference import TorchPredictor, probabilities
    from mnist_lab.evaluation.loading import load_predictor
    from mnist_lab.serving.predictor import OnnxPredictor

    out, _ = onnx_export
    torch_model, onnx_model = load_predictor(good_run), load_predictor(out, threads=1)
    assert isinstance(torch_model, TorchPredictor) and isinstance(onnx_model, OnnxPredictor)
    assert torch_model.path.suffix == ".ckpt" and onnx_model.path == out
    images = datamodule.tensors["test"][0][:500]
    a, b = probabilities(torch_model, images), probabilities(onnx_model, images)
    assert a.shape == b.shape == (500, 10)
    assert torch.allclose(a.sum(-1), torch.ones(500), atol=1e-5)
    assert (a - b).abs().max() < 1e-4 and torch.equal(a.argmax(-1), b.argmax(-1))
