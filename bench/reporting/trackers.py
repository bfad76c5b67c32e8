"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) through Ray Tune's logger callbacks.

All optional: a suite lists them (``trackers: [tensorboard, mlflow]``) or ``bench run --tracker``
adds them. Each tracker's package is checked before the run starts, so a missing one is a clear
error naming what to install instead of a failure after the first trial. Every tracker gets one
result per trial: the metrics and costs of its row. MLflow runs are tagged with which metrics are
better higher and which lower (from the metric registry).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError
from bench.config.validation import describe_validation_error

TrackerName = Literal["tensorboard", "mlflow", "wandb"]
TRACKER_NAMES = list(get_args(TrackerName))
EXTRA = 'pip install "mic-bench[trackers]"'

log = logging.getLogger(__name__)


class TensorBoardOptions(BaseModel):
    """Event files go beside each Tune trial: `tensorboard --logdir RUN_DIR/tune`."""

    model_config = ConfigDict(extra="forbid")


class MLflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/mlflow.db
    experiment_name: str | None = None  # default: the suite name
    save_artifact: bool = False


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str | None = None  # default: the suite name
    group: str | None = None
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None  # default: wandb's own (needs a login online)


@dataclass(frozen=True)
class TrackerContext:
    run_path: Path
    suite_name: str
    params: dict[str, dict[str, Any]]  # trial key -> its axes and hyperparameters


@dataclass(frozen=True)
class TrackerKind:
    name: str
    package: str
    install: str
    options: type[BaseModel]
    build: Callable[[BaseModel, TrackerContext], Any]


@dataclass(frozen=True)
class Tracker:
    """A tracker chosen for a run, options validated and package present."""

    kind: TrackerKind
    options: BaseModel

    def callback(self, ctx: TrackerContext):
        return self.kind.build(self.options, ctx)


class _KeepGoing:
    """Mixed into each tracker: a failure while logging a trial (server gone, rejected value) is
    logged once and the suite goes on; a benchmark is not lost over its tracking."""

    _warned = False

    def _guard(self, log_call, *args, **kwargs):
        try:
            log_call(*args, **kwargs)
        except Exception as exc:  # the tracker's own error types vary by package
            if not self._warned:
                log.warning("tracker %s failed (%s: %s); the run goes on without it", type(self).__name__,
                            type(exc).__name__, exc)
                self._warned = True

    def log_trial_start(self, trial):
        self._guard(super().log_trial_start, trial)

    def log_trial_result(self, iteration, trial, result):
        self._guard(super().log_trial_result, iteration, trial, result)

    def log_trial_end(self, trial, failed: bool = False):
        self._guard(super().log_trial_end, trial, failed=failed)


def _tensorboard(options: TensorBoardOptions, ctx: TrackerContext):
    from ray.tune.logger import TBXLoggerCallback

    return type("TensorBoardTracker", (_KeepGoing, TBXLoggerCallback), {})()


def _mlflow(options: MLflowOptions, ctx: TrackerContext):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(ctx.run_path / 'mlflow.db').resolve()}"
    experiment = options.experiment_name or ctx.suite_name
    if not (options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        _create_local_experiment(uri, experiment, ctx.run_path / "mlflow-artifacts")
    params = ctx.params

    class MLflowTracker(_KeepGoing, MLflowLoggerCallback):
        """Logs each trial's axes and hyperparameters as params (Tune's config holds only the trial key),
        and names metrics as MLflow allows (no '@': ndcg@10 -> ndcg_at_10)."""

        def log_trial_start(self, trial):
            super().log_trial_start(trial)
            axes = params.get(trial.config.get("trial_key"), {})
            if axes and trial in self._trial_runs:
                self._guard(self.mlflow_util.log_params, run_id=self._trial_runs[trial], params_to_log=axes)

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, {k.replace("@", "_at_"): v for k, v in result.items()})

    from bench.metrics.registry import direction_tags

    return MLflowTracker(tracking_uri=uri, experiment_name=experiment, tags={"suite": ctx.suite_name, **direction_tags()},
                         save_artifact=options.save_artifact)


def _create_local_experiment(uri: str, name: str, artifacts: Path) -> None:
    """Keep artifacts of the default local store inside the run folder, not in the working directory."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        artifacts.mkdir(parents=True, exist_ok=True)
        client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def _wandb(options: WandbOptions, ctx: TrackerContext):
    from ray.air.integrations.wandb import WandbLoggerCallback

    extra = {k: v for k, v in {"entity": options.entity, "mode": options.mode}.items() if v is not None}
    return type("WandbTracker", (_KeepGoing, WandbLoggerCallback), {})(project=options.project or ctx.suite_name, group=options.group,
                               dir=str(ctx.run_path.resolve()), **extra)


TRACKERS: dict[str, TrackerKind] = {
    "tensorboard": TrackerKind("tensorboard", "tensorboardX", EXTRA, TensorBoardOptions, _tensorboard),
    "mlflow": TrackerKind("mlflow", "mlflow", EXTRA, MLflowOptions, _mlflow),
    "wandb": TrackerKind("wandb", "wandb", "pip install wandb", WandbOptions, _wandb),
}


def resolve_trackers(refs: list, *, file: str | None = None, cli_names: tuple[str, ...] = ()) -> list[Tracker]:
    """The suite's `trackers:` plus `--tracker` names (a name in both is used once, with the suite's options)."""
    entries = [(f"trackers[{i}]", getattr(r, "name", r), dict(getattr(r, "options", None) or {}))
               for i, r in enumerate(refs)]
    named = {name for _, name, _ in entries}
    entries += [("--tracker", name, {}) for name in dict.fromkeys(cli_names) if name not in named]
    out = []
    for where, name, options in entries:
        kind = TRACKERS.get(name)
        if kind is None:
            raise BenchError(f"unknown tracker '{name}'", file=file, field=where,
                             fix=f"use one of: {', '.join(TRACKERS)}")
        try:
            parsed = kind.options.model_validate(options)
        except ValidationError as exc:
            raise BenchError(describe_validation_error(exc, kind.options, prefix=f"{where}.options"), file=file,
                             field=f"{where}.options", fix="see docs/reports.md for each tracker's options") from None
        if importlib.util.find_spec(kind.package) is None:
            raise BenchError(f"tracker '{name}' needs the {kind.package} package, which is not installed",
                             file=file if where != "--tracker" else None, field=where, fix=kind.install)
        out.append(Tracker(kind, parsed))
    return out
