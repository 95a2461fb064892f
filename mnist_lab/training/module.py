"""The one LightningModule: trains any ``nn.Module`` classifier with the optimizer and scheduler
that Hydra hands over as partials, so switching either is a config change, never a code change.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy

from mnist_lab.errors import ConfigError

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
STAGES = ("train", "val", "test")
# A torch scheduler's state that is progress, not the schedule's shape: compared without them, a
# restored scheduler and today's fresh one describe the same schedule or a different one.
SCHEDULER_PROGRESS = {
    "last_epoch", "_step_count", "_last_lr", "_is_initial", "_get_lr_called_within_step",
}  # fmt: skip
SCHEDULE_LENGTH = ("total_steps", "T_max")  # named in the log line when they change
log = logging.getLogger(__name__)


def jensen_shannon(*logits: torch.Tensor) -> torch.Tensor:
    """Mean KL of each reading's softmax to their average (AugMix's consistency term)."""
    log_p = [z.float().log_softmax(-1) for z in logits]
    log_mean = torch.stack(log_p).exp().mean(0).clamp_min(1e-7).log()
    kl = [F.kl_div(log_mean, lp, log_target=True, reduction="batchmean") for lp in log_p]
    return torch.stack(kl).mean()


def short_run_warmup(pct_start: float, total_steps: int, three_phase: bool = False) -> dict:
    """OneCycle's ``pct_start`` for a run of only a few steps (smoke tests, ``fast_dev_run``,
    tiny limits, many DDP ranks): OneCycleLR divides by the length of its phases in steps, so
    a warm-up of exactly one step (4 steps at 0.25) or none left after it raises
    ZeroDivisionError. The warm-up is stretched to 2 steps and kept half a step short of the
    end; a long run's ``pct_start`` is returned unchanged (an empty dict)."""
    n = total_steps
    pct = min(max(pct_start, 2 / n), 1 - 0.5 / n)
    if three_phase and abs((2 * pct * n - 2) - (n - 1)) < 1e-9:  # second phase of length zero
        pct -= 0.25 / n
    if pct == pct_start:
        return {}
    log.info("OneCycle over %d steps: warm-up pct_start %s -> %.3f", n, pct_start, pct)
    return {"pct_start": pct}


@dataclass(frozen=True)
class SchedulerSpec:
    """A learning-rate scheduler as Lightning wants it: the torch factory, and when it steps.

    ``conf/scheduler/*.yaml`` keep Lightning's two keys beside the scheduler's own arguments
    (``scheduler.pct_start=0.12``, ``scheduler.interval=step``), so the partial Hydra
    instantiates from them also binds ``interval`` and ``monitor``; :meth:`of` takes them off
    before the torch scheduler ever sees them.
    """

    factory: Callable[..., Any]  # optimizer (and OneCycleLR's total_steps) -> torch scheduler
    interval: str = "epoch"  # "epoch" | "step": when Lightning calls scheduler.step()
    monitor: str | None = None  # the logged metric a ReduceLROnPlateau watches

    @classmethod
    def of(cls, scheduler: SchedulerSpec | Callable[..., Any] | None) -> SchedulerSpec | None:
        """From what ``instantiate(cfg.scheduler)`` returns: a partial of the torch class whose
        keywords may hold ``interval``/``monitor``, or None (``scheduler=none``)."""
        if scheduler is None or isinstance(scheduler, SchedulerSpec):
            return scheduler
        if not callable(scheduler):
            raise ConfigError(
                f"scheduler={scheduler!r} is not a scheduler: it needs a _target_ and "
                "_partial_: true (conf/scheduler/*.yaml); scheduler=none takes no scheduler.* keys"
            )
        if not isinstance(scheduler, functools.partial):
            return cls(scheduler)
        keywords = dict(scheduler.keywords)
        interval = keywords.pop("interval", "epoch")
        monitor = keywords.pop("monitor", None)
        factory = functools.partial(scheduler.func, *scheduler.args, **keywords)
        return cls(factory, interval, monitor)


class Classifier(L.LightningModule):
    """Cross-entropy classification with torchmetrics accuracy per stage and ``val/acc_best``.

    Args:
        net: the plain model (``mnist_lab.models``), logits out.
        optimizer: a partial taking parameter groups, e.g. ``SGD(lr=0.05, momentum=0.9)``
            (None when the module only evaluates).
        scheduler: a partial taking the optimizer, e.g. ``OneCycleLR(max_lr=0.1,
            interval="step")``: ``interval`` ("epoch" | "step") and ``monitor`` (a metric or
            None) are Lightning's and taken off first (:class:`SchedulerSpec`), or None. A
            factory that accepts ``total_steps`` (OneCycleLR) and leaves it unset gets the
            Trainer's step count.
        label_smoothing: cross-entropy label smoothing (0 = off).
        decay_norm_and_bias: apply weight decay to BatchNorm and bias parameters too; off by
            default because decaying them only shrinks the scale the next layer undoes.
        channels_last: NHWC memory layout for net and inputs (the config's ``auto`` is
            resolved before the module is built, ``mnist_lab.training.checks.prepare``);
            oneDNN's NHWC convolutions are faster on CPUs in float32 and ~2x in bf16.
        fp32_eval: run validation, test and predict without autocast even when training in
            ``bf16-mixed``, so the reported numbers are those of the float32 model that export
            and serve run (bf16 rounding of the logits can flip near-ties).
        run_config: the run's resolved config, stored in the checkpoint to rebuild the model.
        teacher: a trained net whose predictions the net learns to match (knowledge
            distillation, Hinton et al. 2015), e.g. an ensemble of checkpoints
            (``mnist_lab.training.checkpoint.load_ensemble``); it sees the same augmented batch
            as the student. Not saved in checkpoints, not part of the trained model.
        distill_weight: share of the loss that is the distillation term (0: plain
            cross-entropy; 1: the labels are not used at all).
        distill_temperature: softens both distributions before they are compared (the term is
            scaled by T^2 so its gradients keep their size).
        undistilled: share of each training batch, from its start, that learns from the labels
            only: the degraded images (``data.augment.degrade_p``, which degrades the first
            share of a batch) that a teacher trained on clean digits cannot read.
        consistency: weight of a Jensen-Shannon term between the two readings of each image in
            a batch of twins (``data.augment.twins``: [degraded; clean]), AugMix's consistency
            loss (Hendrycks et al. 2020): the degraded twin is pulled towards what the clean one
            says, so robustness is learnt as invariance, not as a second set of digits.
        compile: ``torch.compile`` the net for training (``nn.Module.compile``: in place, so
            the checkpoint's keys stay ``net.*`` with no ``_orig_mod.``, and eval, export and
            serve load it like any other). Off by default: on a 2-core CPU compiling costs
            tens of seconds and the compiled step is rarely faster (``bench machine``).
    """

    # set per stage in __init__ (setattr); declared here so their types are known
    train_acc: MulticlassAccuracy
    val_acc: MulticlassAccuracy
    test_acc: MulticlassAccuracy
    train_loss: MeanMetric
    val_loss: MeanMetric
    test_loss: MeanMetric

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerSpec | Callable[..., Any] | None = None,
        label_smoothing: float = 0.0,
        decay_norm_and_bias: bool = False,
        num_classes: int = 10,
        channels_last: bool = False,
        fp32_eval: bool = True,
        run_config: Mapping[str, Any] | None = None,
        teacher: nn.Module | None = None,
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
        undistilled: float = 0.0,
        consistency: float = 0.0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not 0 <= distill_weight <= 1 or distill_temperature <= 0 or not 0 <= undistilled <= 1:
            raise ConfigError(
                "module.distill_weight and module.undistilled must be in [0, 1] and "
                f"module.distill_temperature > 0, got {distill_weight}, {undistilled} and "
                f"{distill_temperature}"
            )
        if consistency < 0:
            raise ConfigError(f"module.consistency must be >= 0, got {consistency}")
        if distill_weight > 0 and teacher is None:
            raise ConfigError(
                f"module.distill_weight={distill_weight} needs a teacher: set module.teacher "
                "(see conf/experiment/distilled.yaml) or module.distill_weight=0"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "teacher"], logger=False)
        # A tuple, not an attribute nn.Module registers: the teacher stays out of the
        # checkpoint, the optimizer, EMA averaging and train()/eval() switching.
        self.teachers: tuple[nn.Module, ...] = (teacher,) if teacher is not None else ()
        if not isinstance(channels_last, bool):
            raise ConfigError(
                f"module.channels_last={channels_last!r} reached the LightningModule unresolved: "
                "it takes true or false; `auto` is resolved for this machine by "
                "mnist_lab.training.checks.prepare(cfg) (train does it) before the module is built"
            )
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)
        self.optimizer_factory = optimizer
        self.scheduler_spec = SchedulerSpec.of(scheduler)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.num_classes = num_classes
        for stage in STAGES:
            # validate_args/nan checks off: they cost a host sync on every batch
            acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
            setattr(self, f"{stage}_acc", acc)
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints: a resumed run remembers it
        # (scheduler state, optimizer steps) as configure_optimizers built it for this run
        self._fresh_schedule: tuple[dict[str, Any], int | float] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))

    def _eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.hparams["fp32_eval"]:
            return self(x)
        with torch.autocast(self.device.type, enabled=False):
            return self(x.float())

    def shared_step(
        self, batch: tuple[torch.Tensor, ...], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch[0], batch[1]
        logits = self(x) if stage == "train" else self._eval_forward(x)
        loss = self.criterion(logits, y)
        weight = self.hparams["distill_weight"]
        if stage == "train" and weight > 0:
            # The teacher reads the images before their degradation when the batch has them
            # (data.teacher_views), else what the student reads.
            seen = batch[2] if len(batch) > 2 else x
            loss = self._distilled_loss(seen, y, logits, loss, weight)
        if stage == "train" and self.hparams["consistency"] > 0:
            loss = loss + self.hparams["consistency"] * jensen_shannon(*logits.chunk(2))
        getattr(self, f"{stage}_acc").update(logits.detach(), y)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=y.numel())
        if stage != "train":
            # Metric objects (not per-step values) are logged: they sync across DDP ranks once
            # per epoch, so ranks may hold different numbers of evaluation batches.
            self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_epoch=True)
            self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), on_epoch=True, prog_bar=True)
        return loss, logits

    def _distilled_loss(
        self,
        seen: torch.Tensor,
        y: torch.Tensor,
        logits: torch.Tensor,
        loss: torch.Tensor,
        weight: float,
    ) -> torch.Tensor:
        """(1 - w) * cross-entropy + w * distillation (the teacher reading ``seen``) on the
        taught rows; cross-entropy alone on the first ``undistilled`` share; the batch mean."""
        n = len(seen)
        k = min(n, round(self.hparams["undistilled"] * n))
        if k == n:
            return loss
        # `loss` is already the whole batch's cross-entropy: reused when every row is taught.
        labels = loss if k == 0 else self.criterion(logits[k:], y[k:])
        taught = torch.lerp(labels, self.distillation_loss(seen[k:], logits[k:]), weight)
        if k == 0:
            return taught
        return (k * self.criterion(logits[:k], y[:k]) + (n - k) * taught) / n

    def distillation_loss(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """KL(teacher || student) at temperature T, times T^2."""
        t = self.hparams["distill_temperature"]
        with torch.no_grad():
            target = self.teachers[0](x.contiguous(memory_format=self.memory_format))
        return (
            F.kl_div(
                (logits.float() / t).log_softmax(-1),
                (target.float() / t).log_softmax(-1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )

    def on_fit_start(self) -> None:
        # after the EMA callback's copy (setup): the average is eager, the trained net compiled
        if self.hparams["compile"] and self.net._compiled_call_impl is None:
            self.net.compile()
        for teacher in self.teachers:
            teacher.to(self.device).to(memory_format=self.memory_format).eval()

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss, logits = self.shared_step(batch, "train")
        # Per-step values only on the steps the logger writes (every `log_every_n_steps`):
        # `self.log` on every step costs more than a small model's whole step on a CPU.
        # (mypy: Lightning's connectors set trainer.log_every_n_steps, an undeclared attribute)
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]
        if every and (self.global_step + 1) % every == 0:
            acc = multiclass_accuracy(logits.detach(), batch[1], self.num_classes, average="micro")
            self.log("train/loss_step", loss, prog_bar=True)
            self.log("train/acc_step", acc)
        return loss

    def on_train_epoch_end(self) -> None:
        # Epoch means over every training batch. torchmetrics' compute() already syncs DDP
        # ranks; sync_dist averages equal values (once per epoch) and keeps Lightning quiet.
        self.log("train/loss_epoch", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc_epoch", self.train_acc.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Returns the logits, so callbacks (TensorBoard figures) can see the predictions."""
        return self.shared_step(batch, "val")[1].detach()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._eval_forward(batch[0]).float()

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a fresh run; a resumed one keeps its best so far
            self.val_acc_best.reset()
        else:  # restored by now: optimizer, scheduler, loop state
            self.continue_schedule()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight-decayed weights and (unless ``decay_norm_and_bias``) undecayed 1-d params and
        the tensors the net lists in ``no_weight_decay()``."""
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        if self.hparams["decay_norm_and_bias"]:
            return [{"params": [p for _, p in named], "name": "all"}]
        # timm's convention: a net names the tensors decay must not shrink (ViT's position
        # embedding and class token) in no_weight_decay()
        keep = set(getattr(self.net, "no_weight_decay", set)())
        decayed = {n for n, p in named if p.ndim > 1 and n not in keep}
        # named groups: LearningRateMonitor logs them as lr-<Optimizer>/<name>
        return [
            {"params": [p for n, p in named if n in decayed], "name": "weights"},
            {
                "params": [p for n, p in named if n not in decayed],
                "weight_decay": 0.0,
                "name": "norm_bias",
            },
        ]

    def build_optimization(self, total_steps: int | float) -> dict[str, Any]:
        """Optimizer and Lightning's lr-scheduler dict; ``total_steps`` feeds OneCycle."""
        if self.optimizer_factory is None:
            raise ConfigError("this module has no optimizer: it was built to evaluate, not train")
        optimizer = self.optimizer_factory(self.parameter_groups())
        spec = self.scheduler_spec
        if spec is None:
            return {"optimizer": optimizer}
        config = {
            "scheduler": self.build_scheduler(optimizer, total_steps),
            "interval": spec.interval,
        }
        if spec.monitor:
            config["monitor"] = spec.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def build_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int | float) -> Any:
        """The torch scheduler of ``scheduler.*`` for a run of ``total_steps`` optimizer steps:
        a factory that takes ``total_steps`` (OneCycleLR) and leaves it unset gets it, with a
        warm-up that a run of a few steps can still have (:func:`short_run_warmup`)."""
        assert self.scheduler_spec is not None
        factory = self.scheduler_spec.factory
        bound = getattr(factory, "keywords", {})
        kwargs: dict[str, Any] = {}
        parameters = inspect.signature(factory).parameters
        if "total_steps" in parameters and "total_steps" not in bound:
            kwargs["total_steps"] = int(total_steps)
        if "pct_start" in parameters and "total_steps" in kwargs:
            kwargs |= short_run_warmup(
                bound.get("pct_start", parameters["pct_start"].default),
                kwargs["total_steps"],
                bound.get("three_phase", False),
            )
        return factory(optimizer, **kwargs)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        total_steps = self.trainer.estimated_stepping_batches
        optimization = self.build_optimization(total_steps)
        # What today's config makes of the schedule, kept to compare with a resumed one
        # (on_train_start): the checkpoint's state replaces it during the restore.
        sched = optimization.get("lr_scheduler", {}).get("scheduler")
        self._fresh_schedule = (copy.deepcopy(sched.state_dict()), total_steps) if sched else None
        # the dict is Lightning's OptimizerConfig / OptimizerLRSchedulerConfig (TypedDicts)
        return cast(OptimizerLRScheduler, optimization)

    def continue_schedule(self) -> None:
        """A resumed run whose schedule differs from the checkpoint's (``trainer.max_epochs``
        raised to train longer, ``max_steps``, batch size or devices changed, a scheduler key
        changed): the schedule today's config describes, continued from the checkpoint's step.

        OneCycle and cosine are rebuilt for the new total and stepped to where the run is, so
        the rest of the run follows the longer schedule (the learning rate goes back up to the
        value the new schedule has at this step); a restored OneCycle of the old length would
        stop the run with "Tried to step 43 times". ReduceLROnPlateau has no length and keeps
        its state.
        """
        configs = self.trainer.lr_scheduler_configs
        if self._fresh_schedule is None or len(configs) != 1:
            return
        fresh, total_steps = self._fresh_schedule
        config = configs[0]
        restored = config.scheduler
        if isinstance(restored, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return
        old = restored.state_dict()
        if all(old.get(k) == v for k, v in fresh.items() if k not in SCHEDULER_PROGRESS):
            return  # the same schedule: the restored state continues exactly
        done = int(restored.last_epoch)  # steps (or epochs) the run has taken so far
        optimizer = restored.optimizer
        for group in optimizer.param_groups:  # chainable schedulers start from the base rate
            group["lr"] = group.get("initial_lr", group["lr"])
        with warnings.catch_warnings():  # stepping without optimizer steps is the point here
            warnings.simplefilter("ignore")
            try:
                scheduler = self.build_scheduler(optimizer, total_steps)
                for _ in range(done):
                    scheduler.step()
            except ValueError as err:  # OneCycle: more steps done than the new total
                raise ConfigError(
                    f"ckpt_path={self.trainer.ckpt_path} has taken {done} scheduler steps, more "
                    f"than the {int(total_steps)} this run's settings give ({err}): raise "
                    "trainer.max_epochs (or trainer.max_steps) to train longer"
                ) from None
        config.scheduler = scheduler
        changed = {k: (old.get(k), v) for k, v in fresh.items() if k in SCHEDULE_LENGTH}
        what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items() if a != b)
        log.info(
            "resumed with another schedule (%s): %s rebuilt and continued from %s %d",
            what or "scheduler settings changed",
            type(scheduler).__name__,
            config.interval,
            done,
        )


def build_module(cfg: DictConfig | Mapping[str, Any], net: nn.Module | None = None) -> Classifier:
    """The LightningModule of a run config, the one way ``train``, ``eval`` and ``bench`` make it.

    ``cfg`` is prepared (``auto`` resolved: :func:`mnist_lab.training.checks.prepare`, or the
    stored config of a checkpoint).

    Without ``net``: a fresh net, with the optimizer and scheduler of their groups, to train.
    With ``net`` (loaded from a checkpoint, whose run config this is): the module it trained in
    (loss, label smoothing, memory layout), to evaluate.
    """
    if net is not None:  # to evaluate: a distilled model's teacher is not loaded
        training_only = (
            "teacher",
            "distill_weight",
            "distill_temperature",
            "undistilled",
            "consistency",
        )
        options = {k: v for k, v in cfg["module"].items() if k not in training_only}
        return cast(Classifier, instantiate(options, _partial_=True)(net=net))
    factory = instantiate(cfg["module"], _partial_=True)
    return factory(
        net=instantiate(cfg["model"]),
        optimizer=instantiate(cfg["optimizer"]),
        scheduler=instantiate(cfg["scheduler"], _convert_="all"),
        run_config=OmegaConf.to_container(cfg, resolve=True)
        if isinstance(cfg, DictConfig)
        else dict(cfg),
    )
