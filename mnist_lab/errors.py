"""The project's error types, and the one place that turns them into what a user sees.

Every failure a user can fix (bad config, missing data, a damaged checkpoint, an unreadable
image, a diverged run, an export that does not match) raises a subclass of
:class:`MnistLabError` whose message names the problem and the fix. Entry points wrap their
``main`` in :func:`entry_point`, which logs that message as one line and exits with status 1,
instead of a traceback. In a sweep the failed job is recorded and the sweep goes on; Hydra
then ends it with that one message too (a :class:`MnistLabError` is one of Hydra's "compact"
exceptions, printed without a traceback). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from hydra.errors import CompactHydraException, InstantiationException

EXIT_CODE = 1  # what a shell sees when a command refused its input


P = ParamSpec("P")
R = TypeVar("R")


class MnistLabError(CompactHydraException):
    """A failure the user can fix; the message says which file or key, and how.

    A :class:`~hydra.errors.CompactHydraException`, so that when a sweep ends on a failed job
    Hydra prints this message, not a traceback.
    """


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


class RankFailedError(MnistLabError, RuntimeError):
    """Another DDP rank of this job failed; the message carries its error, and where the
    rest of it (the traceback) was written."""


@contextmanager
def trainer_settings(settings: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Lightning's own refusals of its Trainer arguments, as one :class:`ConfigError`.

    Lightning checks many settings only when the Trainer is built or the loop starts
    (``limit_val_batches`` too small for the epochs, ``val_check_interval`` past the epoch, ...)
    and raises ``MisconfigurationException`` or a ``ValueError`` from its own code; both name
    the argument, which is ``trainer.<argument>`` here; ``settings`` (the ``trainer`` config)
    lets the message quote the values. Other errors pass through unchanged.
    """
    try:
        yield
    except Exception as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if cause is None or not _lightning_refused(cause):
            raise
        message = " ".join(str(cause).split())
        # the argument Lightning names first is the one it refuses (later ones are advice)
        named = sorted(
            (match.start(), f"trainer.{key}={value}")
            for key, value in (settings or {}).items()
            if key != "_target_" and (match := re.search(rf"\b{key}\b", message))
        )
        raise ConfigError(
            f"Lightning refused {named[0][1] if named else 'the trainer settings'}: {message} "
            "(trainer.<argument>= on the command line, or conf/trainer/)"
        ) from None


def _lightning_refused(err: BaseException) -> bool:
    """A MisconfigurationException, or a ValueError raised inside Lightning's own code."""
    if any(c.__name__ == "MisconfigurationException" for c in type(err).__mro__):
        return True
    if not isinstance(err, ValueError) or err.__traceback__ is None:
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] in ("lightning", "pytorch_lightning")


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
