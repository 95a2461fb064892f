"""Commands in real processes that start warm: forked from a server that has already imported
torch, Lightning, Hydra and the rest (Python's ``forkserver`` with these modules preloaded).

A cold ``python -m mnist_lab.train`` spends ~5 s (15-20 s on a slow VM) importing libraries
before it reads its first argument, and the suite starts a command ~100 times. A warm process
is still its own process -- its own pid, argv, working directory, environment, stdout and
stderr, exit code, signals, atexit handlers and child processes -- only the import is shared
(copy-on-write). ``tests.helpers.run_module`` uses it unless a test asks for a cold start or
sets an environment variable that a library reads at import; the tests that are about a cold start
(the README tour, the ONNX server's imports, the AVX2 imitation) keep real ``python -m``.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process as mp_process
import os
import runpy
import sys
import threading
import traceback
import weakref
from pathlib import Path

# What the commands import before they read their arguments: torch, Lightning, Hydra, ONNX,
# matplotlib; and what some import, ~1 s each (Optuna sweeps, the MLflow logger, the server).
# Not the command modules themselves (`python -m` runs those fresh as __main__), and not timm
# (the ViT): it imports wandb, which makes a temporary folder at import and removes it at exit,
# so every child would remove the server's (the assert below keeps wandb out).
import fastapi  # noqa: F401
import hydra  # noqa: F401
import lightning.pytorch  # noqa: F401
import matplotlib.pyplot  # noqa: F401
import mlflow  # noqa: F401
import numpy as np
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import optuna  # noqa: F401
import torch  # noqa: F401
import torchvision  # noqa: F401

import mnist_lab.data.datamodule
import mnist_lab.evaluation.figures
import mnist_lab.training.checkpoint
import mnist_lab.training.module  # noqa: F401  (the first three bind `mnist_lab`)

assert "wandb" not in sys.modules, "a preloaded module imports wandb: see the note above"

# The forkserver's own process object: a main process, as a `python -m` process is.
MAIN_PROCESS = multiprocessing.current_process()

# Environment variables that torch, oneDNN, OpenMP, matplotlib or Python itself read when they
# are imported: a test that sets one (ATEN_CPU_CAPABILITY=avx2, say) needs a cold start. The
# rest (MNIST_DATA_DIR, HYDRA_FULL_ERROR, PL_GLOBAL_SEED, ...) are read when a command runs.
IMPORT_TIME_ENV = (
    "ATEN_", "ONEDNN_", "DNNL_", "OMP_", "KMP_", "GOMP_", "MKL", "OPENBLAS", "CUDA", "NVIDIA",
    "PYTORCH", "TORCH", "MPL", "PYTHON", "LD_", "ORT_",
)  # fmt: skip


def command(module: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str):
    """The body of a warm process: ``python -m module args`` from here on."""
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    # its own main process, as under `python -m`, not a multiprocessing child
    mp_process._current_process = MAIN_PROCESS  # type: ignore[attr-defined]
    mp_process._parent_process = None  # type: ignore[attr-defined]
    mp_process._children = set()  # type: ignore[attr-defined]
    np.random.seed()  # a fresh process's numpy draws from fresh entropy (random reseeds itself)
    # What the server's imports made is the server's: a child must not delete it at its exit
    # (timm imports wandb, whose media TemporaryDirectory every child would otherwise remove).
    for inherited in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        inherited.atexit = False
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [module, *args]
    sys.path.insert(0, cwd)  # as `python -m` puts the working directory first
    sys.modules.pop(module, None)
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what the interpreter does on the way out: wait for threads, run atexit
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


_context: multiprocessing.context.ForkServerContext | None = None
_env: dict[str, str] = {}


def start(module: str, args: list[str], cwd: str, out: str, err: str) -> mp_process.BaseProcess:
    """A warm ``python -m module args``: ``.pid``, ``.kill()``, ``.join()``, ``.exitcode``
    (negative for a signal, like ``Popen.returncode``)."""
    global _context, _env
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload([__name__])
        # the server imports this module by name: start it where `tests` is importable
        with contextlib.chdir(Path(__file__).resolve().parents[1]):
            multiprocessing.forkserver.ensure_running()
        _env = comparable(dict(os.environ))
    proc = _context.Process(  # type: ignore[attr-defined]
        target=command, args=(module, args, cwd, dict(os.environ), out, err)
    )
    proc.start()
    return proc


def comparable(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


def can_start_warm() -> bool:
    """False when this process's environment differs from the one the warm server imported
    its libraries under (a test set ATEN_CPU_CAPABILITY, say): then only a cold start is true."""
    return _context is None or comparable(dict(os.environ)) == _env
