"""Every model family works through the whole lab: a sweep over all six, `auto` per family, the
ViT and the RNN exported (ONNX and TorchScript, parity on all 10,000 test images, dynamic batch),
predicted and served from the exported file, ensembled across architectures, evaluated with the
corruption suite; and a `module.compile=true` run's checkpoint resumes, evaluates, exports and
serves like any other."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mnist_lab.evaluation.export import export
from mnist_lab.paths import CONFIG_DIR
from mnist_lab.training.checkpoint import load_checkpoint, resolve_checkpoints
from mnist_lab.training.hardware import native_cpu_bf16
from tests.helpers import read_metrics, run_module, running_server, train_in_process

pytestmark = pytest.mark.slow

FAMILIES = ["mlp", "lenet", "cnn", "resnet", "vit", "rnn"]


@pytest.fixture(scope="module")
def family_sweep(tmp_path_factory) -> dict[str, Path]:
    """The issue's sweep, `debug=tiny`: one job per family. Returns model name -> job dir."""
    sweep = tmp_path_factory.mktemp("families")
    run_module(
        "mnist_lab.train",
        "-m",
        f"model={','.join(FAMILIES)}",
        "debug=tiny",
        "logger=none",
        f"paths.log_dir={sweep}_logs",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = {}
    for job in sweep.glob("*/metrics.json"):
        overrides = (job.parent / ".hydra" / "overrides.yaml").read_text()
        (model,) = [m for m in FAMILIES if f"model={m}\n" in overrides]
        jobs[model] = job.parent
    return jobs


def test_the_sweep_trains_all_six_families_with_auto_per_family(family_sweep):
    assert sorted(family_sweep) == sorted(FAMILIES)
    for model, job in family_sweep.items():
        metrics = read_metrics(job)
        assert 0.0 <= metrics["test/acc"] <= 1.0 and Path(metrics["best_ckpt"]).is_file(), model
        # channels_last only for nets with convolutions; bf16 only where it speeds the net up
        assert metrics["channels_last"] is (model not in ("mlp", "rnn")), model
        bf16 = native_cpu_bf16() and model != "vit"
        assert metrics["precision"] == ("bf16-mixed" if bf16 else "32"), model


@pytest.fixture(scope="module")
def digit_png(datamodule) -> tuple[bytes, int]:
    images, labels = datamodule.tensors["test"]
    buffer = io.BytesIO()
    Image.fromarray(images[0].numpy()).save(buffer, format="PNG")
    return buffer.getvalue(), int(labels[0])


def _export(ckpt: Path, out: Path, fmt: str) -> dict:
    run_module(
        "mnist_lab.export",
        f"ckpt_path={ckpt}",
        f"format={fmt}",
        f"out={out}",
        f"hydra.run.dir={out.parent / ('export_' + fmt)}",
    )
    return json.loads(out.with_name(out.name + ".json").read_text())


@pytest.mark.parametrize("model", ["vit", "rnn"])
def test_vit_and_rnn_export_with_parity_predict_and_serve(family_sweep, model, digit_png, tmp_path):
    """Both formats: parity on all 10,000 test images (the export's own check) and a dynamic
    batch; then `predict` and `serve` run on the exported ONNX file."""
    onnx_file, script = tmp_path / f"{model}.onnx", tmp_path / f"{model}.pt"
    # the command for ONNX; its library function in this process for TorchScript, on the
    # config the command composes (the same code without a second ~10 s interpreter start-up)
    reports = [_export(family_sweep[model], onnx_file, "onnx")]
    overrides = [f"ckpt_path={family_sweep[model]}", "format=torchscript", f"out={script}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        reports.append(export(compose(config_name="export", overrides=overrides)))
    for report in reports:
        assert report["argmax_agree"] == 10_000 and report["max_abs_diff"] <= 1e-4, report
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    loaded = torch.jit.load(str(script))
    for n in (1, 7):  # dynamic batch
        x = np.random.rand(n, 1, 28, 28).astype("f4")
        assert session.run(None, {"input": x})[0].shape == (n, 10)
        assert loaded(torch.from_numpy(x)).shape == (n, 10)
    png, _ = digit_png
    image = tmp_path / "digit.png"
    image.write_bytes(png)
    proc = run_module(
        "mnist_lab.predict",
        f"ckpt_path={onnx_file}",
        f"images=[{image}]",
        "output=json",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert abs(sum(row["probabilities"]) - 1) < 1e-4
    with running_server(str(onnx_file), f"hydra.run.dir={tmp_path / 'serve'}") as url:
        assert httpx.get(f"{url}/health").json()["model"] == onnx_file.name
        answer = httpx.post(f"{url}/predict", files={"file": png}).json()
    assert answer["digit"] == row["digit"]


def test_eval_ensemble_and_corruption_suite_across_architectures(family_sweep, tmp_path):
    run_module(
        "mnist_lab.eval",
        f"ckpt_path={family_sweep['vit']}",
        f"out_dir={tmp_path / 'eval'}",
        "robustness=true",
        "robustness_limit=100",
        f"hydra.run.dir={tmp_path / 'eval_run'}",
    )
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    assert (tmp_path / "eval" / "errors.png").is_file()
    proc = run_module(
        "mnist_lab.ensemble",
        f"ckpts=[{family_sweep['cnn']},{family_sweep['vit']},{family_sweep['rnn']}]",
        "tta=false",  # TTA is test_ensemble's; here: three architectures in one average
        f"hydra.run.dir={tmp_path / 'ensemble'}",
    )
    assert "ensemble of 3 test/acc: " in proc.stdout
    assert len([line for line in proc.stdout.splitlines() if line.endswith(".ckpt")]) == 3


def test_vit_trains_under_ddp(tmp_path):
    run_module(
        "mnist_lab.train",
        "trainer=ddp_cpu",
        "model=vit",
        "debug=tiny",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = read_metrics(tmp_path)
    assert metrics["world_size"] == 2 and 0 <= metrics["test/acc"] <= 1


def test_a_compiled_run_resumes_evaluates_exports_and_serves(tmp_path, digit_png):
    run = tmp_path / "run"
    common = ["model=mlp", "debug=tiny", "module.compile=true", "logger=none"]  # quick to compile
    train_in_process(common, run)  # train(cfg), as the command runs it, without a new process
    last = run / "checkpoints" / "last.ckpt"
    keys = list(load_checkpoint(last)["state_dict"])
    assert keys and not [k for k in keys if "_orig_mod" in k]
    assert load_checkpoint(last)["hyper_parameters"]["compile"] is True
    # resume to train longer: the same keys load into a net that is compiled again
    train_in_process([*common, "trainer.max_epochs=2", "ckpt_path=last"], run)
    assert read_metrics(run)["epochs"] == 2
    run_module("mnist_lab.eval", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert _export(run, tmp_path / "compiled.onnx", "onnx")["argmax_agree"] == 10_000
    ckpt = resolve_checkpoints(str(run))[0]
    with running_server(str(ckpt), f"hydra.run.dir={tmp_path / 'serve'}") as url:
        answer = httpx.post(f"{url}/predict", files={"file": digit_png[0]}).json()
    assert 0 <= answer["digit"] <= 9
