"""One rank-zero logger (mnist_lab/ranks.py) instead of rank checks written out per module."""

from __future__ import annotations

import logging

from lightning_utilities.core.rank_zero import rank_zero_only

from mnist_lab.ranks import RankedLogger, is_rank_zero, rank


def test_the_rank_is_lightnings_once_set_else_the_launchers_variables(monkeypatch):
    monkeypatch.delattr(rank_zero_only, "rank", raising=False)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert rank() == 0 and is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun / Lightning's launcher, before a strategy
    assert rank() == 1 and not is_rank_zero()
    monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)  # the strategy set it
    assert rank() == 0


def test_ranked_logger_speaks_once_per_run_or_names_the_rank(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    once, every = RankedLogger("t.once"), RankedLogger("t.every", rank_zero_only=False)
    for current in (0, 1):
        monkeypatch.setattr(rank_zero_only, "rank", current, raising=False)
        once.info("resolved %s", "bf16-mixed")
        every.warning("shard %d", current)
    assert [r.getMessage() for r in caplog.records if r.name == "t.once"] == ["resolved bf16-mixed"]
    assert [r.getMessage() for r in caplog.records if r.name == "t.every"] == [
        "[rank: 0] shard 0",
        "[rank: 1] shard 1",
    ]
