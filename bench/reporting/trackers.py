"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) through Ray Tune's logger callbacks.

All optional: a suite lists them (``trackers: [tensorboard, mlflow]``) or ``bench run --tracker``
adds them. Each tracker's package is checked before the run starts, so a missing one is a clear
error naming what to install instead of a failure after the first trial.

TensorBoard and MLflow get, per trial: a readable run name (suite, axis values, seed), the full
resolved trial config (flattened params, and the config file itself), one point per dev
evaluation (epoch) for the learning curves, the final metrics and costs of the trial's row, and
how it ended (failed, with its error). MLflow runs are also tagged with which metrics are better
higher and which lower (from the metric registry). Weights & Biases gets Ray Tune's own logging.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError
from bench.config.validation import describe_validation_error

TrackerName = Literal["tensorboard", "mlflow", "wandb"]
TRACKER_NAMES = list(get_args(TrackerName))
EXTRA = 'pip install "mic-bench[trackers]"'
TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard/<run name>/

log = logging.getLogger(__name__)

# Keys of a Tune result that are Tune's bookkeeping, not the trial's figures (bench.running.runner.TUNE_KEYS
# plus the final report's text fields).
_NOT_FIGURES = {"timestamp", "done", "training_iteration", "trial_id", "date", "time_this_iter_s", "time_total_s",
                "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
                "checkpoint_dir_name", "should_checkpoint", "experiment_tag", "curve_point", "ok", "status", "error"}


class TensorBoardOptions(BaseModel):
    """Event files per trial: `tensorboard --logdir RUN_DIR/tensorboard`."""

    model_config = ConfigDict(extra="forbid")


class MLflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/mlflow.db
    experiment_name: str | None = None  # default: the suite name
    save_artifact: bool = False  # also upload the trial's Tune folder (its stdout/stderr logs)


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str | None = None  # default: the suite name
    group: str | None = None
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None  # default: wandb's own (needs a login online)


@dataclass(frozen=True)
class TrialFacts:
    """What a tracker shows of one trial besides its reports."""

    name: str  # "suite fusion=late seed=0"
    params: dict[str, Any]  # flat: trial key, axes, hyperparameters, every field of the resolved config
    config_yaml: str  # the resolved trial config as a file


@dataclass(frozen=True)
class TrackerContext:
    run_path: Path
    suite_name: str
    params: dict[str, dict[str, Any]]  # trial key -> its axes and hyperparameters
    trials: dict[str, TrialFacts] = field(default_factory=dict)  # trial key -> name, params, config


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as dotted keys (``stages.0.optimizer.lr``); empty ones stay as ``{}``/``[]``."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def resolved_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial config with every default filled in, as the trial reads it; the config as given when
    it does not validate here (the trial then fails and says why)."""
    from bench.config.schema import TrialConfig

    try:
        return TrialConfig.model_validate(config).model_dump(mode="json")
    except ValidationError:
        return config


def headline_params(config: dict[str, Any]) -> dict[str, Any]:
    """Short names for what people filter by: the last (fine-tuning) stage's lr, epochs and batch size,
    the fusion's plugin name and the seed."""
    stages = config.get("stages") or [{}]
    last = stages[-1] if isinstance(stages[-1], dict) else {}
    fusion = config.get("fusion")
    return {"lr": (last.get("optimizer") or {}).get("lr"), "epochs": last.get("epochs"),
            "batch_size": last.get("batch_size"),
            "fusion": fusion.get("name") if isinstance(fusion, dict) else fusion, "seed": config.get("seed")}


def trial_facts(suite_name: str, spec) -> TrialFacts:
    """Run name, flat params and config file of one TrialSpec."""
    config = resolved_config(spec.config)
    label = spec.label()
    if "seed" not in {**spec.axes, **spec.hyper}:
        label = f"{label} seed={config.get('seed', 0)}" if spec.axes or spec.hyper else f"seed={config.get('seed', 0)}"
    params = {**flatten(config), **{k: v for k, v in headline_params(config).items() if v is not None},
              **spec.axes, **spec.hyper, "trial_key": spec.key, "suite": suite_name}
    return TrialFacts(f"{suite_name} {label}", params, yaml.safe_dump(config, sort_keys=False))


def tracker_context(run_path: Path, suite_name: str, specs) -> TrackerContext:
    return TrackerContext(run_path, suite_name, {t.key: {**t.axes, **t.hyper} for t in specs},
                          {t.key: trial_facts(suite_name, t) for t in specs})


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

    def setup(self, *args, **kwargs):
        self._guard(super().setup, *args, **kwargs)

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


def figures(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one Tune result that are the trial's own (no Tune bookkeeping, no booleans)."""
    return {k: float(v) for k, v in result.items() if k not in _NOT_FIGURES and isinstance(v, (int, float))
            and not isinstance(v, bool) and v == v}


def _trial_tracker_base():
    """Built on first use: Ray is imported only by a run that tracks."""
    from ray.tune.logger import LoggerCallback

    class TrialTracker(LoggerCallback):
        """Turns Tune's events into start / evaluation / end of one bench trial.

        A result with ``curve_point`` is one dev evaluation; the result without it is the trial's final
        report (its row's figures, ``status`` and ``error``). A trial whose worker crashed ends with
        ``failed``; one a scheduler stopped ends without a final report.
        """

        def __init__(self, ctx: TrackerContext):
            self.ctx = ctx
            self._final: dict[Any, dict[str, Any]] = {}

        def setup(self, *args, **kwargs):
            self.open()

        def facts(self, trial) -> TrialFacts:
            key = trial.config.get("trial_key")
            return self.ctx.trials.get(key) or TrialFacts(f"{self.ctx.suite_name} {key}", {"trial_key": key}, "")

        def log_trial_start(self, trial):
            self.start(trial, self.facts(trial))

        def log_trial_result(self, iteration, trial, result):
            step = int(result.get("training_iteration") or 0)
            if result.get("curve_point"):
                self.evaluation(trial, step, figures(result))
            else:
                self._final[trial] = result
                self.final(trial, step, figures(result))

        def log_trial_end(self, trial, failed: bool = False):
            final = self._final.pop(trial, None)
            if failed:
                status = "failed"
                error = f"the trial's worker crashed (see {getattr(trial, 'local_path', None) or 'the Ray logs'})"
            elif final is None:
                status, error = "stopped", "stopped by the scheduler before its final report"
            else:
                status, error = str(final.get("status") or ("ok" if final.get("ok") else "failed")), str(
                    final.get("error") or "")
            self.end(trial, status, error)

        # what each tracker writes
        def open(self): ...

        def start(self, trial, facts: TrialFacts): ...

        def evaluation(self, trial, step: int, values: dict[str, float]): ...

        def final(self, trial, step: int, values: dict[str, float]): ...

        def end(self, trial, status: str, error: str): ...

        def get_state(self):  # nothing to save with Tune's experiment state: writers and clients are rebuilt
            return None

    return TrialTracker


# ---------------------------------------------------------------------------------------------- TensorBoard

def _safe_folder(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9=._,+-]+", "_", name).strip("_") or "trial"


def _hparam_value(value: Any) -> Any:
    """TensorBoard hparams take text, numbers and yes/no; anything else is written as JSON text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _tensorboard(options: TensorBoardOptions, ctx: TrackerContext):
    base = _trial_tracker_base()

    class TensorBoardTracker(_KeepGoing, base):
        """One folder per trial, named by its axis values and seed: scalars ``epoch/<name>`` per dev
        evaluation (step = report number), ``final/<metric>`` once, the config as text and as a file,
        and hparams (every flat param, plus ``status``) against the final metrics."""

        def open(self):
            self._writers: dict[Any, Any] = {}
            self._finals: dict[Any, dict[str, float]] = {}
            self._folders: set[str] = set()

        def start(self, trial, facts):
            from tensorboardX import SummaryWriter

            label = facts.name.removeprefix(f"{self.ctx.suite_name} ")
            folder = _safe_folder(label)
            if folder in self._folders:  # two trials with the same labels still get two folders
                folder = f"{folder},{facts.params.get('trial_key')}"
            self._folders.add(folder)
            path = self.ctx.run_path / TENSORBOARD_DIR / folder
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.yaml").write_text(facts.config_yaml, encoding="utf-8")
            writer = SummaryWriter(logdir=str(path), flush_secs=5)
            writer.add_text("config", "```\n" + facts.config_yaml + "```")
            self._writers[trial] = writer

        def evaluation(self, trial, step, values):
            writer = self._writers.get(trial)
            for k, v in values.items():
                if writer is not None and not k.startswith("best_"):
                    writer.add_scalar(f"epoch/{k}", v, global_step=step)

        def final(self, trial, step, values):
            self._finals[trial] = values

        def end(self, trial, status, error):
            from tensorboardX.proto.api_pb2 import Status
            from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
            from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
            from tensorboardX.summary import hparams

            writer = self._writers.pop(trial, None)
            if writer is None:
                return
            values = self._finals.pop(trial, {})
            facts = self.facts(trial)
            params = {k: _hparam_value(v) for k, v in facts.params.items() if v is not None}
            metrics = {f"final/{k}": v for k, v in values.items()}
            experiment, start_info, _ = hparams({**params, "status": status}, metrics)
            code = {"ok": "STATUS_SUCCESS", "stopped": "STATUS_ABORTED"}.get(status, "STATUS_FAILURE")
            content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(code)), version=0)
            end_info = Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=SummaryMetadata(
                plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content.SerializeToString())))])
            for summary in (experiment, start_info, end_info):
                writer.file_writer.add_summary(summary)
            for k, v in metrics.items():
                writer.add_scalar(k, v, global_step=0)
            if error:
                writer.add_text("error", "```\n" + error + "\n```")
            writer.close()

    return TensorBoardTracker(ctx)


# ---------------------------------------------------------------------------------------------- MLflow

MLFLOW_PARAM_CHARS = 6000  # MLflow refuses longer param values
MLFLOW_TAG_CHARS = 5000


def mlflow_name(metric: str) -> str:
    """MLflow refuses '@' in names: ndcg@10 -> ndcg_at_10."""
    return metric.replace("@", "_at_")


def _mlflow(options: MLflowOptions, ctx: TrackerContext):
    base = _trial_tracker_base()
    uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(ctx.run_path / 'mlflow.db').resolve()}"
    experiment_name = options.experiment_name or ctx.suite_name
    if not (options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        _create_local_experiment(uri, experiment_name, ctx.run_path / "mlflow-artifacts")

    class MLflowTracker(_KeepGoing, base):
        """One MLflow run per trial, named by suite, axis values and seed: every flat param, the config
        as ``config.yaml``, metrics per dev evaluation (step = report number), the final metrics (named as
        in the row; ``final_<name>`` where the row repeats a curve's name, e.g. the kept epoch's dev figures), and
        the status (FAILED with the error as the ``error`` tag and ``error.txt``; KILLED when stopped)."""

        def open(self):
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=uri)
            found = self._client.get_experiment_by_name(experiment_name)
            self._experiment = found.experiment_id if found else self._client.create_experiment(experiment_name)
            self._runs: dict[Any, str] = {}
            self._curve_names: dict[Any, set[str]] = {}

        def start(self, trial, facts):
            from mlflow.entities import Param

            from bench.metrics.registry import direction_tags

            run = self._client.create_run(self._experiment, run_name=facts.name,
                                          tags={"suite": ctx.suite_name, "trial_key": str(facts.params["trial_key"]),
                                                **direction_tags()})
            self._runs[trial] = run_id = run.info.run_id
            params = [Param(k, str(v)[:MLFLOW_PARAM_CHARS]) for k, v in facts.params.items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self._client.log_batch(run_id, params=params[i:i + 100])
            self._client.log_text(run_id, facts.config_yaml, "config.yaml")

        def _log(self, trial, step, values):
            import time

            from mlflow.entities import Metric

            run_id = self._runs.get(trial)
            if run_id is None or not values:
                return
            now = int(time.time() * 1000)
            metrics = [Metric(mlflow_name(k), v, now, step) for k, v in values.items()]
            for i in range(0, len(metrics), 1000):
                self._client.log_batch(run_id, metrics=metrics[i:i + 1000])

        def evaluation(self, trial, step, values):
            values = {k: v for k, v in values.items() if not k.startswith("best_")}
            self._curve_names.setdefault(trial, set()).update(values)
            self._log(trial, step, values)

        def final(self, trial, step, values):
            # a row figure named like a curve (dev_macro_f1 of the kept weights) must not read as one more epoch
            curve = self._curve_names.pop(trial, set())
            self._log(trial, step, {f"final_{k}" if k in curve else k: v for k, v in values.items()})

        def end(self, trial, status, error):
            run_id = self._runs.pop(trial, None)
            self._curve_names.pop(trial, None)
            if run_id is None:
                return
            self._client.set_tag(run_id, "status", status)
            if error:
                self._client.set_tag(run_id, "error", error[:MLFLOW_TAG_CHARS])
                self._client.log_text(run_id, error, "error.txt")
            if options.save_artifact and getattr(trial, "local_path", None) and Path(trial.local_path).is_dir():
                self._client.log_artifacts(run_id, trial.local_path, "tune")
            state = {"ok": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED")
            self._client.set_terminated(run_id, status=state)

    return MLflowTracker(ctx)


def _create_local_experiment(uri: str, name: str, artifacts: Path) -> None:
    """Keep artifacts of the default local store inside the run folder, not in the working directory."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        artifacts.mkdir(parents=True, exist_ok=True)
        client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


# ---------------------------------------------------------------------------------------------- W&B

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
