"""Which process of a DDP run this is, and a logger that speaks once per run, not once per rank.

Lightning keeps the rank on ``rank_zero_only.rank``: set from RANK / LOCAL_RANK / SLURM_PROCID
when Lightning is imported, and to the global rank once a strategy starts. That function lives
in lightning_utilities (~60 ms to import, against ~4 s for Lightning), so this module reads the
same attribute without importing Lightning, and nothing else spells it out (the type stubs do
not declare it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only

# What Lightning reads before a strategy sets the rank, in its order (lightning.fabric).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def rank() -> int:
    """This process's global rank: 0 outside DDP."""
    known = getattr(rank_zero_only, "rank", None)
    if known is not None:
        return int(known)
    for key in RANK_VARIABLES:
        if key in os.environ:
            return int(os.environ[key])
    return 0


def is_rank_zero() -> bool:
    return rank() == 0


class RankedLogger(logging.LoggerAdapter):
    """lightning-hydra-template's RankedLogger: logs on rank zero only (the default), or on
    every rank with a ``[rank: N]`` prefix (``rank_zero_only=False``)."""

    def __init__(self, name: str, rank_zero_only: bool = True) -> None:
        super().__init__(logging.getLogger(name), {})
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        current = rank()
        if self.rank_zero_only and current != 0:
            return
        text = msg if self.rank_zero_only else f"[rank: {current}] {msg}"
        self.logger.log(level, text, *args, **kwargs)
