"""The LightningModule: OneCycle for runs of a few steps, the comparison that tells a resumed
run whether its schedule changed, the loss it trains on (label smoothing, distillation), its
optimizer groups, the scheduler spec each config hands Lightning, and (with a Trainer, six
steps) the EMA weights swapped in for validation."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from mnist_lab.config import short_run
from mnist_lab.training.module import SCHEDULER_PROGRESS, short_run_warmup


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


# The LightningModule's own arithmetic, without a Trainer: the loss it trains on (label
# smoothing, distillation), the optimizer groups and the scheduler spec Lightning receives.


def _classifier(**kwargs):
    from mnist_lab.training.module import Classifier

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    return Classifier(net, channels_last=False, **kwargs)


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=generator), torch.arange(n) % 10


def test_training_loss_is_label_smoothed_cross_entropy():
    x, y = _batch()
    eps = 0.1
    module = _classifier(label_smoothing=eps)
    loss, logits = module.shared_step((x, y), "train")
    log_p = logits.log_softmax(-1)
    by_hand = (1 - eps) * -log_p.gather(1, y[:, None]).mean() + eps * -log_p.mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert module.train_acc.compute() == (logits.argmax(-1) == y).float().mean()


def test_distillation_mixes_cross_entropy_and_the_tempered_kl_to_the_teacher():
    from mnist_lab.errors import ConfigError

    x, y = _batch()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    w, t = 0.7, 4.0
    module = _classifier(teacher=teacher, distill_weight=w, distill_temperature=t)
    loss, logits = module.shared_step((x, y), "train")
    ce = torch.nn.functional.cross_entropy(logits, y)
    p_teacher = (teacher(x) / t).softmax(-1)
    kl = (p_teacher * (p_teacher.log() - (logits / t).log_softmax(-1))).sum(-1).mean() * t * t
    assert loss.item() == pytest.approx(((1 - w) * ce + w * kl).item(), rel=1e-4)
    # the teacher is no part of what is trained or saved
    assert not any(k.startswith("teacher") for k in module.state_dict())
    assert {id(p) for p in module.parameters()}.isdisjoint(id(p) for p in teacher.parameters())
    with pytest.raises(ConfigError, match="needs a teacher"):
        _classifier(distill_weight=0.5)


def test_a_clean_teacher_reads_the_undegraded_views_and_skips_the_undistilled_share():
    """With a third batch element (data.teacher_views) the teacher reads it, not the degraded
    images; ``undistilled`` keeps the batch's first share on the labels alone."""
    x, y = _batch()
    clean = x.flip(-1)  # any other images: what the teacher must read
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    w, t = 0.5, 2.0

    def kl(seen, logits):
        p = (teacher(seen) / t).softmax(-1)
        return (p * (p.log() - (logits / t).log_softmax(-1))).sum(-1).mean() * t * t

    ce = torch.nn.functional.cross_entropy
    module = _classifier(teacher=teacher, distill_weight=w, distill_temperature=t)
    loss, logits = module.shared_step((x, y, clean), "train")
    by_hand = (1 - w) * ce(logits, y) + w * kl(clean, logits)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-4)
    assert loss.item() != pytest.approx(((1 - w) * ce(logits, y) + w * kl(x, logits)).item())
    # undistilled = 0.25 of 16: the first 4 rows learn from the labels only
    module = _classifier(teacher=teacher, distill_weight=w, distill_temperature=t, undistilled=0.25)
    loss, logits = module.shared_step((x, y), "train")
    taught = (1 - w) * ce(logits[4:], y[4:]) + w * kl(x[4:], logits[4:])
    assert loss.item() == pytest.approx(
        ((4 * ce(logits[:4], y[:4]) + 12 * taught) / 16).item(), rel=1e-4
    )
    whole = _classifier(teacher=teacher, distill_weight=w, undistilled=1.0)
    loss, logits = whole.shared_step((x, y), "train")
    assert loss.item() == pytest.approx(ce(logits, y).item(), rel=1e-5)


def test_consistency_adds_the_jensen_shannon_term_between_the_twins():
    """module.consistency: the batch is [degraded twins; clean twins]; the term is zero when
    both halves read alike and is AugMix's JS (mean KL to the average) otherwise."""
    from mnist_lab.errors import ConfigError
    from mnist_lab.training.module import jensen_shannon

    z = torch.randn(8, 10)
    assert jensen_shannon(z, z).item() == pytest.approx(0.0, abs=1e-6)
    p, q = z.softmax(-1), (z * 3).roll(1, -1).softmax(-1)
    m = (p + q) / 2
    by_hand = ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)).mean() / 2
    assert jensen_shannon(z, (z * 3).roll(1, -1)).item() == pytest.approx(by_hand.item(), rel=1e-5)
    x, y = _batch()
    plain = _classifier()
    twin = _classifier(consistency=2.0)
    twin.load_state_dict(plain.state_dict())
    (base, logits), (loss, _) = (
        plain.shared_step((x, y), "train"),
        twin.shared_step((x, y), "train"),
    )
    js = jensen_shannon(*logits.chunk(2))
    assert js.item() > 0 and loss.item() == pytest.approx((base + 2.0 * js).item(), rel=1e-5)
    assert twin.shared_step((x, y), "val")[0].item() == pytest.approx(
        plain.shared_step((x, y), "val")[0].item(), rel=1e-6
    )  # evaluation reads the labels alone
    with pytest.raises(ConfigError, match="consistency must be >= 0"):
        _classifier(consistency=-1.0)


def test_norms_and_biases_are_not_weight_decayed_unless_asked():
    groups = {g["name"]: g for g in _classifier().parameter_groups()}
    assert [p.ndim for p in groups["weights"]["params"]] == [2]
    assert [p.ndim for p in groups["norm_bias"]["params"]] == [1]
    assert groups["norm_bias"]["weight_decay"] == 0.0
    assert [g["name"] for g in _classifier(decay_norm_and_bias=True).parameter_groups()] == ["all"]


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("onecycle", {"interval": "step", "type": OneCycleLR}),
        ("plateau", {"interval": "epoch", "monitor": "val/acc"}),
        ("none", None),
    ],
)
def test_each_scheduler_config_reaches_lightning_as_its_spec(scheduler, expected):
    from mnist_lab.training.module import build_module
    from tests.helpers import compose_cfg

    optimization = build_module(compose_cfg([f"scheduler={scheduler}"])).build_optimization(120)
    if expected is None:
        assert set(optimization) == {"optimizer"}
        return
    spec = optimization["lr_scheduler"]
    assert spec["interval"] == expected["interval"] and spec.get("monitor") == expected.get(
        "monitor"
    )
    if "type" in expected:  # OneCycle is told the run's length
        assert isinstance(spec["scheduler"], expected["type"])
        assert spec["scheduler"].total_steps == 120


def test_ema_validates_on_the_averaged_weights_and_trains_on_the_raw_ones(tmp_path):
    """callbacks=ema (Lightning's EMAWeightAveraging): validation sees the averaged weights,
    which differ from the raw ones the optimizer moves, and training resumes on the raw ones."""
    import lightning as L
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from mnist_lab.data.datamodule import MNISTDataModule
    from mnist_lab.models import LeNet5
    from mnist_lab.training.module import Classifier

    def weights(module: L.LightningModule) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.net.parameters()]

    seen: dict[str, list[torch.Tensor]] = {}

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            seen["raw"] = weights(module)

        def on_validation_batch_start(self, trainer, module, *args):
            seen["validated"] = weights(module)

        def on_validation_end(self, trainer, module):
            seen["after"] = weights(module)

    ema = EMAWeightAveraging(decay=0.5)
    L.seed_everything(0)
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    module = Classifier(LeNet5(), optimizer=sgd, channels_last=False)
    trainer = L.Trainer(
        max_steps=6, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=6,
        callbacks=[ema, Probe()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=MNISTDataModule(batch_size=32, eval_batch_size=64))
    averaged = [p.detach() for p in ema._average_model.module.net.parameters()]
    assert all(torch.equal(v, a) for v, a in zip(seen["validated"], averaged, strict=True))
    assert not all(torch.equal(v, r) for v, r in zip(seen["validated"], seen["raw"], strict=True))
    assert all(torch.equal(a, r) for a, r in zip(seen["after"], seen["raw"], strict=True))
