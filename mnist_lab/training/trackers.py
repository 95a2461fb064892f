"""What each experiment tracker gets beyond the metrics Lightning streams to it.

Lightning sends every ``self.log`` value (step and epoch curves, ``val/acc_best``, the final
``test/acc`` and ``test/loss``) to every logger. The rest differs per tracker, so it is written
here once, dispatched on the logger's type (``functools.singledispatch``: a new tracker adds
one function, no ``if name == ...`` anywhere):

- ``record_run``: the flattened run config as params, the best checkpoint and run directory as
  tags (MLflow) or summary fields (W&B); TensorBoard gets params *with* the final metrics, the
  one way its HPARAMS tab shows results;
- ``log_figure``: the callbacks' figures (augmented inputs, confusion matrix, error gallery)
  as TensorBoard images, MLflow artifacts or W&B images;
- ``tracker_ref``: where the run went (MLflow store + run id, W&B run directory), written into
  ``metrics.json`` so tools and people find it again;
- ``close``: ends a W&B run, so the next job of a sweep (same process) starts its own.

``MLFlowLogger`` is Lightning's, plus a local SQLite store created once under a file lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import singledispatch
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from matplotlib.figure import Figure


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger; a ``sqlite:///`` store (its folder, tables and experiment) is
    created up front under a file lock. Without it the parallel jobs of a sweep
    (``hydra/launcher=joblib``) race to create the tables ("table ... already exists") or the
    experiment, and all but one fail."""

    def __init__(
        self,
        experiment_name: str = "mnist_lab",
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        **kwargs: Any,
    ) -> None:
        if tracking_uri and tracking_uri.startswith("sqlite:///"):
            _create_sqlite_store(tracking_uri, experiment_name, artifact_location)
        super().__init__(
            experiment_name=experiment_name,
            tracking_uri=tracking_uri,
            artifact_location=artifact_location,
            **kwargs,
        )


def _create_sqlite_store(uri: str, experiment_name: str, artifact_location: str | None) -> None:
    import fcntl

    from mlflow import MlflowClient

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not the folder
    with path.with_name(path.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment_name) is None:  # creates the tables
            client.create_experiment(experiment_name, artifact_location=artifact_location)


@singledispatch
def record_run(
    logger: Logger, params: dict[str, Any], final: dict[str, float], **tags: str
) -> None:
    """Any other logger (CSV): the params; its metrics were logged as they came."""
    logger.log_hyperparams(params)


@record_run.register
def _(logger: TensorBoardLogger, params: dict[str, Any], final: dict[str, float], **tags: str):
    # logged without metric names, the HPARAMS tab lists the config but no results
    logger.log_hyperparams(params, metrics=final)


@record_run.register
def _(logger: LightningMLFlowLogger, params: dict[str, Any], final: dict[str, float], **tags: str):
    logger.log_hyperparams(params)
    for key, value in tags.items():
        logger.experiment.set_tag(logger.run_id, key, value)


@record_run.register
def _(logger: WandbLogger, params: dict[str, Any], final: dict[str, float], **tags: str):
    logger.log_hyperparams(params)
    logger.experiment.summary.update(tags)


@singledispatch
def log_figure(logger: Logger, tag: str, figure: Figure, step: int) -> None:
    """Loggers without images (CSV) skip figures."""


@log_figure.register
def _(logger: TensorBoardLogger, tag: str, figure: Figure, step: int) -> None:
    logger.experiment.add_figure(tag, figure, step, close=False)


@log_figure.register
def _(logger: LightningMLFlowLogger, tag: str, figure: Figure, step: int) -> None:
    # one PNG per step under the run's artifacts: figures/val/confusion_matrix/step000120.png
    logger.experiment.log_figure(logger.run_id, figure, f"figures/{tag}/step{step:06d}.png")


@log_figure.register
def _(logger: WandbLogger, tag: str, figure: Figure, step: int) -> None:
    import wandb

    # W&B's own step must only grow; Lightning logs trainer/global_step beside it instead
    logger.experiment.log({tag: wandb.Image(figure), "trainer/global_step": step})


def shows_figures(logger: Logger) -> bool:
    """Whether ``log_figure`` has a handler for this logger (CSV has none)."""
    return log_figure.dispatch(type(logger)) is not log_figure.dispatch(Logger)


@singledispatch
def tracker_ref(logger: Logger) -> dict[str, str] | None:
    """Where a tracker keeps the run, for ``metrics.json``; None for files in the run dir."""
    return None


@tracker_ref.register
def _(logger: LightningMLFlowLogger) -> dict[str, str] | None:
    return {
        "tracker": "mlflow",
        "tracking_uri": str(logger._tracking_uri),
        "experiment": str(logger._experiment_name),
        "run_id": str(logger.run_id),
    }


@tracker_ref.register
def _(logger: WandbLogger) -> dict[str, str] | None:
    run = logger.experiment
    return {
        "tracker": "wandb",
        "project": str(run.project),
        "run_id": str(run.id),
        "dir": str(Path(run.dir).parent),  # offline-run-<time>-<id>: what `wandb sync` takes
    }


@singledispatch
def close(logger: Logger, failed: bool) -> None:
    """Most loggers are closed by Lightning (``finalize``) and need nothing more."""


@close.register
def _(logger: WandbLogger, failed: bool) -> None:
    # Lightning leaves the run open; the next WandbLogger of this process would reuse it
    if logger._experiment is not None:
        logger._experiment.finish(exit_code=1 if failed else 0)
        logger._experiment = None


@contextmanager
def closing(loggers: list[Logger]) -> Iterator[None]:
    """Close every tracker's run when training ends, marked failed if it raised."""
    try:
        yield
    except BaseException:
        for logger in loggers:
            close(logger, failed=True)
        raise
    for logger in loggers:
        close(logger, failed=False)
