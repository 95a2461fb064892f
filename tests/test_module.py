"""The LightningModule's schedule handling without a Trainer: OneCycle for runs of a few steps,
and the comparison that tells a resumed run whether its schedule changed."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from mnist_lab.config import short_run
from mnist_lab.module import SCHEDULER_PROGRESS, short_run_warmup


def _one_cycle(total: int, pct: float, three_phase: bool = False) -> OneCycleLR:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    kwargs = {"pct_start": pct, "three_phase": three_phase}
    kwargs |= short_run_warmup(pct, total, three_phase)
    return OneCycleLR(opt, max_lr=0.1, total_steps=total, **kwargs)


def test_plain_one_cycle_divides_by_zero_on_a_four_step_run():
    """The failure the adjustment exists for (torch's own OneCycleLR, 4 steps, 1-step warm-up)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ZeroDivisionError):
        OneCycleLR(opt, max_lr=0.1, total_steps=4, pct_start=0.25)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("pct", [0.05, 0.12, 0.25, 0.3, 0.5, 0.9])
def test_one_cycle_runs_every_step_of_any_short_schedule(pct, three_phase):
    for total in range(1, 80):
        sched = _one_cycle(total, pct, three_phase)
        lrs = [sched.get_last_lr()[0]]
        for _ in range(total):
            sched.optimizer.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        assert all(0 <= lr <= 0.1 + 1e-12 for lr in lrs), (total, lrs)


def test_long_schedules_keep_their_warm_up():
    assert short_run_warmup(0.25, 4300) == {}
    assert short_run_warmup(0.12, 100) == {}
    assert short_run_warmup(0.25, 4) == {"pct_start": 0.5}  # 2 warm-up steps, not 1


def test_schedule_comparison_ignores_progress_and_sees_a_new_length():
    a, b = _one_cycle(42, 0.25), _one_cycle(42, 0.25)
    for _ in range(10):
        a.optimizer.step()
        a.step()
    shape = {k: v for k, v in a.state_dict().items() if k not in SCHEDULER_PROGRESS}
    assert shape == {k: v for k, v in b.state_dict().items() if k not in SCHEDULER_PROGRESS}
    longer = _one_cycle(84, 0.25).state_dict()
    assert shape != {k: v for k, v in longer.items() if k not in SCHEDULER_PROGRESS}


@pytest.mark.parametrize(
    ("fast_dev_run", "limit", "short"),
    [
        (False, None, False),
        (True, None, True),
        (5, None, True),
        (False, 1.0, False),
        (False, 20, True),
        (False, 0.3, True),
        (False, 1, True),  # one batch (an int), not the whole epoch
    ],
)
def test_short_run_is_any_run_on_part_of_an_epoch(fast_dev_run, limit, short):
    assert short_run(fast_dev_run, limit) is short
