"""Callbacks that Lightning lacks in the form this project needs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar

from mnist_lab.config import is_interactive


def progress_bar() -> RichProgressBar | None:
    """A rich progress bar at a terminal; nothing in CI or when output goes to a file/pipe
    (the Trainer's ``enable_progress_bar`` follows the same rule through ``${interactive:}``)."""
    return RichProgressBar() if is_interactive() else None
