"""The notebooks execute top to bottom on a real kernel (nbclient), with MNIST_LAB_QUICK=1
shrinking their training runs; they are stored without outputs and use the package's API."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_data", "02_train_and_compare", "03_errors"]


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
    monkeypatch.setenv("MNIST_LAB_QUICK", "1")
    monkeypatch.setenv("MNIST_LAB_NOTEBOOK_OUT", str(tmp_path))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    text = _text(nb)
    for snippet in expected:
        assert snippet in text, f"{name}: {snippet!r} not in the output:\n{text[-3000:]}"
