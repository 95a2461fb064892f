"""The project's error types, and the one place that turns them into what a user sees.

Every failure a user can fix (bad config, missing data, a damaged checkpoint, an unreadable
image, a diverged run, an export that does not match) raises a subclass of
:class:`MnistLabError` whose message names the problem and the fix. Entry points wrap their
``main`` in :func:`entry_point`, which logs that message as one line and exits with status 1,
instead of a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

EXIT_CODE = 1  # what a shell sees when a command refused its input
ERROR_FILE = "error.txt"  # written into a sweep job's directory when the job failed

P = ParamSpec("P")
R = TypeVar("R")


class MnistLabError(Exception):
    """A failure the user can fix; the message says which file or key, and how."""


class ConfigError(MnistLabError, ValueError):
    """A config that composes but cannot work; the message names the keys and the fix."""


class MNISTDataError(MnistLabError, RuntimeError):
    """The MNIST files are missing or damaged; the message says which file and how to fix it."""


class CheckpointError(MnistLabError, RuntimeError):
    """A checkpoint or model file is missing, unreadable, unsafe or not one of mnist_lab's."""


class ImageError(MnistLabError, ValueError):
    """An input image that cannot be read or makes no sense as a digit."""


class ImageTooLargeError(ImageError):
    """An upload over the size limit (the server answers 413)."""


class NonFiniteLossError(MnistLabError, FloatingPointError):
    """Training diverged; raised before any checkpoint of the broken weights is written."""


class ExportError(MnistLabError, RuntimeError):
    """Bad export options, or an export that does not reproduce the PyTorch model."""


def in_multirun() -> bool:
    """Inside one job of a Hydra sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def entry_point(main: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command's ``main``: a :class:`MnistLabError` becomes one logged line and exit 1.

    Inside a Hydra sweep the error is logged and re-raised instead: Hydra then marks that job
    failed and the sweep (or Optuna's ``max_failure_rate``) decides what follows, where an
    exit would end the whole sweep.
    """
    from hydra.errors import InstantiationException

    log = logging.getLogger(main.__module__)

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return main(*args, **kwargs)
            except InstantiationException as wrapped:  # Hydra wraps what a constructor raised
                if isinstance(wrapped.__cause__, MnistLabError):
                    raise wrapped.__cause__ from None
                raise
        except MnistLabError as err:
            log.error("%s", err)
            if in_multirun():
                raise
            sys.exit(EXIT_CODE)

    return wrapper
