"""The notebooks execute top to bottom on a real kernel (nbclient); they are stored without
outputs and use the package's API. Like papermill parameters, the test sets the ``DEBUG``
parameter in the first code cell of each notebook that trains, so every run it makes is a
``debug=tiny`` run (conf/debug/tiny.yaml), the one way the project shrinks training."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT, free_port, wait_for

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_data", "02_train_and_compare", "03_errors"]
TRAINS = {"02_train_and_compare", "03_errors"}  # 01_data only reads the data
DEBUG_LINE = re.compile(r"^DEBUG = None\b.*$", re.MULTILINE)


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            shown = data.get("text/markdown", data.get("text/plain", ""))
            parts.append(out.get("text", "") + shown)
    return "\n".join(parts)


@pytest.mark.slow  # a real kernel runs every cell
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("01_data", ["mean 0.1307 (package: 0.1307), std 0.3081 (package: 0.3081)"]),
        ("02_train_and_compare", ["mlp    test/acc", "lenet  test/acc", "| job | model"]),
        ("03_errors", ["accuracy 0.9", "| digit |", "drawn digits recognised"]),
    ],
)
def test_notebook_executes(name, expected, tmp_path, monkeypatch):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "stored with outputs"
    assert "from mnist_lab" in code[0].source  # the package does the work
    found = len(DEBUG_LINE.findall(code[0].source))
    if name in TRAINS:
        assert found == 1, f"{name}: the first code cell needs one `DEBUG = None` parameter line"
        code[0].source = DEBUG_LINE.sub('DEBUG = "tiny"', code[0].source)
    else:
        assert found == 0, f"{name} trains nothing: a DEBUG parameter there would do nothing"
    monkeypatch.setenv("MNIST_LAB_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.delenv("MNIST_LAB_CKPT", raising=False)  # 03 trains its own (debug) model
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    text = _text(nb)
    for snippet in expected:
        assert snippet in text, f"{name}: {snippet!r} not in the output:\n{text[-3000:]}"


@pytest.mark.slow  # starts JupyterLab through make (make test installs it first)
def test_make_notebooks_serves_the_notebooks_in_jupyterlab():
    """``make notebooks`` starts JupyterLab from the project's venv on ``notebooks/``."""
    port, token = free_port(), secrets.token_hex(8)
    args = f"--no-browser --port={port} --IdentityProvider.token={token}"
    lab = subprocess.Popen(
        ["make", "--no-print-directory", "notebooks", f"LAB_ARGS={args}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # make, the shell and jupyter: stopped together below
    )
    base = f"http://127.0.0.1:{port}"
    try:
        listing = wait_for(f"{base}/api/contents?token={token}", lab, 120).json()
        names = sorted(item["name"] for item in listing["content"])
        assert names == sorted([*(f"{n}.ipynb" for n in NAMES), "README.md"])
        page = httpx.get(f"{base}/lab?token={token}")
        assert page.status_code == 200 and "JupyterLab" in page.text
        specs = httpx.get(f"{base}/api/kernelspecs?token={token}").json()
        assert "python3" in specs["kernelspecs"]
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
