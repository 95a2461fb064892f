"""The package's layers (README "How it is built"), checked on the code itself: import-linter's
contracts from pyproject.toml, no import cycle, no command imported or named by a config, and a
torch-free serving layer."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "mnist_lab"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CORE = {"paths", "config", "errors", "runs", "ranks"}
LAYERS = {"data", "models", "training", "evaluation", "serving", "tools"}


def commands() -> set[str]:
    """Top-level modules that run as ``python -m mnist_lab.<name>``."""
    found = {p.stem for p in PACKAGE.glob("*.py") if '__name__ == "__main__"' in p.read_text()}
    return found | {p.parent.name for p in PACKAGE.glob("*/__main__.py")}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True
    )


def test_every_top_level_module_is_core_a_layer_or_a_command():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    top |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert commands() >= {"train", "eval", "predict", "export", "serve", "bench"}
    assert top == CORE | LAYERS | commands(), "place a new module in a layer (pyproject.toml)"


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "added", "broken"),
    [
        ("serving/preprocess.py", "import torch", "mnist_lab.serving.preprocess -> torch"),
        ("data/files.py", "import mnist_lab.train", "mnist_lab.data is not allowed to import"),
        ("training/fit.py", "import mnist_lab.evaluation.metrics", "mnist_lab.training is not"),
    ],
)
def test_a_forbidden_import_breaks_the_contracts(tmp_path, module, added, broken):
    """The contracts are live: one added import in a copy of the package fails them."""
    shutil.copytree(PACKAGE, tmp_path / "mnist_lab", ignore=shutil.ignore_patterns("static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "mnist_lab" / module
    target.write_text(target.read_text() + f"\n{added}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1 and "1 broken" in result.stdout, result.stdout[-3000:]
    assert broken in " ".join(result.stdout.split()), result.stdout[-3000:]


def test_no_import_cycle_and_no_module_imports_a_command():
    graph = grimp.build_graph("mnist_lab", cache_dir=None)  # function-local imports included
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, cycles
    names = {f"mnist_lab.{c}" for c in commands()}
    importers = {(m, c) for m, targets in edges.items() for c in targets if c in names and m != c}
    assert not {(m, c) for m, c in importers if not m.startswith(c + ".")}, importers


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in edges:
        if node not in index:
            visit(node)
    return groups


def test_no_config_targets_a_command():
    targets = {
        (str(path.relative_to(ROOT)), match)
        for path in (ROOT / "conf").rglob("*.yaml")
        for match in re.findall(r"_target_:\s*(mnist_lab\.[\w.]+)", path.read_text())
    }
    assert len(targets) > 10
    named = {(f, t) for f, t in targets if t.split(".")[1] in commands()}
    assert not named, named


def test_the_serving_layer_loads_no_torch_in_a_fresh_interpreter():
    code = (
        "import sys, mnist_lab.serving, mnist_lab.serving.app, mnist_lab.serving.predictor, "
        "mnist_lab.serving.preprocess, mnist_lab.evaluation.loading; "
        "print([m for m in sys.modules if m.split('.')[0] in {'torch','lightning','torchvision'}])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout[:500]


def test_targets_stored_by_checkpoints_from_before_the_layers_resolve():
    """A checkpoint written before the move names e.g. ``mnist_lab.module.Classifier``; each
    such target maps to one that exists (tests/e2e/test_pre_layers_checkpoint.py loads one)."""
    from hydra.utils import get_object

    from mnist_lab.training.checkpoint import MOVED_TARGETS

    for old, new in MOVED_TARGETS.items():
        assert old.split(".")[1] not in LAYERS - {"data"}, old  # old names were flat
        assert callable(get_object(new)), new
