"""Run a suite with Ray Tune: one Tune trial per TrialSpec, rows persisted as each finishes.

Resume is driven by the results store (rows/ of the run folder), not by Tune's experiment
state: a row is written atomically the moment its trial ends, so after a kill -9 the store
knows exactly which trials finished, and only the others run again.
"""
from __future__ import annotations

import copy
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import polars as pl
import yaml

from bench.errors import BenchError
from bench.reporting.leaderboard import LeaderboardSpec, render_markdown, spec_from_suite
from bench.storage.paths import atomic_write_text
from bench.reporting.provenance import provenance
from bench.reporting.results import RunDir, latest_run_dir, new_run_dir
from bench.config.schema import LoadedSuite, TrialSpec
from bench.running.transport import PAYLOAD, unpack

log = logging.getLogger(__name__)
INTERRUPTED_EXIT = 130  # a run stopped by Ctrl-C (SIGINT), as a shell reports it
CURVE_POINT = "curve_point"  # marks a per-evaluation report (the final report is the trial's row)
# Keys Ray Tune adds to every reported result; a curve read back from reports drops them.
TUNE_KEYS = {CURVE_POINT, PAYLOAD, "timestamp", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
             "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
             "checkpoint_dir_name", "should_checkpoint", "experiment_tag"}


@dataclass
class RunSummary:
    run_dir: Path
    suite: str
    total: int
    kept: int
    ok: int
    failed: int
    rows: pl.DataFrame = field(default_factory=pl.DataFrame)
    stopped: int = 0  # ended early by a Tune scheduler: done, not failed
    interrupted: int = 0  # never ended (Ctrl-C): no row, so --resume runs them

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return INTERRUPTED_EXIT
        return 0 if self.failed == 0 else 1


def _give_streams_isatty() -> None:
    """Tune's per-trial log file wraps stdout/stderr in a Tee without ``isatty``; libraries that
    ask (transformers' load report does) would crash the trial."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not hasattr(stream, "isatty"):
            stream.isatty = lambda: False


def _trainable(config: dict, specs: dict[str, dict], cpus: float, gpus: float, cache_dir: str | None,
               prov: dict[str, str], datasets: dict[str, dict]) -> None:
    """Runs inside a Ray worker, on any node: one trial. It never touches the run folder (which may
    exist only on the driver's machine): its files travel in its final report (bench/running/transport.py)."""
    _give_streams_isatty()
    import socket

    import ray
    from ray import tune

    from bench.api.plugins import get_registry
    from bench.running.transport import PAYLOAD, pack
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    spec = TrialSpec(**specs[config["trial_key"]])
    ctx = TrialContext(registry=get_registry(), cpus=cpus, gpus=gpus, cache_dir=cache_dir, provenance=prov,
                       report=lambda metrics: tune.report({**metrics, CURVE_POINT: True}), datasets=datasets)
    outcome = run_trial(spec, ctx)
    outcome.row.update(node_id=ray.get_runtime_context().get_node_id(), node_ip=ray.util.get_node_ip_address(),
                       hostname=socket.gethostname())
    numeric = {k: v for k, v in outcome.row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    # status and error travel as text too: trackers mark a failed trial FAILED and show why
    tune.report({**numeric, "ok": outcome.row["status"] == "ok", "status": outcome.row["status"],
                 "error": outcome.row.get("error") or "", PAYLOAD: pack(outcome.row, outcome.predictions, outcome.curve)})


def stopped_row(spec: TrialSpec, points: list[dict[str, Any]], scheduler: str) -> dict[str, Any]:
    """The row of a trial a Tune scheduler stopped: its best dev metrics so far (from its last
    report), and no test metrics, since the test split is only seen after training ends."""
    from bench.trial.run import base_row

    last = points[-1] if points else {}
    best = {k[len("best_"):]: v for k, v in last.items() if k.startswith("best_dev_")}
    return {**base_row(spec, "stopped"), **best, "best_epoch": last.get("best_epoch"),
            "epochs_run": last.get("epoch"), "stopped_early": True, "n_evaluations": last.get("evaluation"),
            "selection_note": f"stopped by the {scheduler} scheduler after {last.get('evaluation')} dev evaluations; "
                              "test metrics are not computed for stopped trials"}


def curve_from_reports(points: list[dict[str, Any]], key: str) -> pl.DataFrame | None:
    from bench.trial.run import curve_table

    keep = [{k: v for k, v in p.items() if not k.startswith("best_") and k not in TUNE_KEYS} for p in points]
    return curve_table(keep, key)


def _make_callback(run: RunDir, specs: dict[str, TrialSpec], progress, board: LeaderboardSpec, prov: dict,
                   scheduler: str | None = None):
    from ray.tune import Callback

    from bench.api.plugins import lifecycle_hooks
    from bench.reporting.progress import best_row_text
    from bench.reporting.visible_text import visible

    class RowCallback(Callback):
        """In the driver: writes every trial's files from its final report (or the row of a trial
        that was stopped or crashed), reports progress, calls hooks."""

        def __init__(self):
            super().__init__()
            self.points: dict[str, list[dict[str, Any]]] = {}  # per-evaluation reports of running trials
            self.written: dict[str, dict[str, Any]] = {}  # rows written from the trials' final reports
            self.ended: set[str] = set()  # trials that ended (a row written or tried): the others never did

        def on_trial_start(self, iteration, trials, trial, **info):
            key = trial.config["trial_key"]
            progress.trial_started(key, specs[key].label())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            key = trial.config["trial_key"]
            if result.get(CURVE_POINT):
                self.points.setdefault(key, []).append(result)
                progress.trial_evaluated(key, specs[key].label(), result)
            payload = result.pop(PAYLOAD, None)  # Tune lets callbacks edit the result: it never stores the files
            if payload is not None:
                row, predictions, curve = unpack(payload)
                self.written[key] = run.write_row_or_note(row, predictions, curve)

        def _finish(self, trial, error: str | None):
            key = trial.config["trial_key"]
            row_file = run.rows_dir / f"{key}.parquet"
            points = self.points.pop(key, [])
            row = self.written.pop(key, None)
            if row is None:  # no files arrived: stopped by the scheduler, or the worker crashed
                from bench.trial.run import base_row

                if error is None and scheduler and points:
                    row = stopped_row(specs[key], points, scheduler)
                else:
                    row = base_row(specs[key], "failed", error or "the trial's worker ended without a result")
                row = run.write_row_or_note({**row, **prov}, curve=curve_from_reports(points, key))
            self.ended.add(key)
            rows = run.consolidate()
            lifecycle_hooks(run.path).bench_trial_finished(result=read_only(row))
            rows = rows.filter(pl.col("trial_key").is_in(list(specs))) if not rows.is_empty() else rows
            # the line shows the row as stored (the row itself when it could not be written)
            stored = rows.filter(pl.col("trial_key") == key) if not rows.is_empty() else rows
            shown = stored.row(0, named=True) if stored.height == 1 and row.get("status") == stored["status"][0] else row
            shown = {k: visible(v) if isinstance(v, str) else v for k, v in shown.items()}
            progress.trial_finished(key, shown, visible(specs[key].label()), visible(best_row_text(rows, board)))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finish(trial, f"the trial's worker crashed (see {trial.local_path or 'the Ray logs'})")

    return RowCallback()


RAY_CONNECT_TIMEOUT_S = float(os.environ.get("MIC_BENCH_RAY_CONNECT_TIMEOUT", "60"))
RAY_START_TIMEOUT_S = max(RAY_CONNECT_TIMEOUT_S, 180.0)  # a local start on a busy machine is slow, not stuck


def _init_ray(address: str | None, run: RunDir | None = None) -> None:
    """Start or join Ray; an unreachable or locked cluster is a BenchError within seconds, never a wait."""
    import ray

    from bench.running.preflight import check_ray_address
    from bench.running.ray_sessions import reap_orphans, record_session

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Trials read user paths relative to where `bench run` was started; Tune would chdir them away.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=True)
    reap_orphans()  # Ray processes left by a `bench` driver that was killed (kill -9, OOM)
    if address:
        check_ray_address(address)
        with _give_up_after(RAY_CONNECT_TIMEOUT_S, f"joining the Ray cluster at {address}"):
            try:
                ray.init(address=address, runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}, **kwargs)
            except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError: all mean "not joined"
                from bench.running.preflight import AUTH_FIX

                text = f"{exc} {exc.__cause__ or ''}"
                auth = "Auth" in type(exc).__name__ or "auth" in text.lower()
                raise BenchError(f"could not join the Ray cluster at {address}: {str(exc).splitlines()[0][:300]}",
                                 field="--address", fix=AUTH_FIX if auth else
                                 "check the address and that the cluster is up (`ray status` on its head)") from None
    else:
        _local_auth_token()
        with _give_up_after(RAY_START_TIMEOUT_S, "starting a local Ray instance"):
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
        record_session()


def _local_auth_token() -> None:
    """A local Ray instance gets a fresh token for this run only, through the environment its processes
    inherit: Ray would otherwise write ~/.ray/auth_token (changing the user's home) and print a warning."""
    import secrets

    if any(os.environ.get(v) for v in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return  # the user chose
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray read its config when it was imported; make this process see token mode (as ray.init would)
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # another Ray version: let ray.init switch the mode on itself (with its warning)
        os.environ.pop("RAY_AUTH_MODE", None)


@contextmanager
def _give_up_after(seconds: float, what: str):
    """Ray retries connections for minutes without a word: past ``seconds``, say so and exit 2."""
    import threading

    def give_up():
        print(f"error: {what} took more than {seconds:g} s; giving up\n  fix: check the cluster "
              "(`ray status`), or raise MIC_BENCH_RAY_CONNECT_TIMEOUT", file=sys.stderr, flush=True)
        os._exit(BenchError.exit_code)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def preflight_ray(loaded: LoadedSuite, address: str | None, registry=None) -> list[dict[str, Any]]:
    """Start or join Ray and check the cluster can hold one trial and, on a cluster, that every node
    has the suite's plugins at the driver's versions, before any folder or trial exists.
    Returns what each node reported (empty for a local run)."""
    import ray

    from bench.running.cluster import check_nodes, plugins_used
    from bench.running.preflight import check_cluster_resources, check_local_cpus

    if address is None and not ray.is_initialized():
        check_local_cpus(loaded)  # refused before a local Ray starts at all
    _init_ray(address)
    try:
        check_cluster_resources(loaded, ray.cluster_resources())
        if address is not None and registry is not None:
            return check_nodes(plugins_used(loaded.trials, registry))
    except BenchError:
        ray.shutdown()
        raise
    return []


def run_suite(loaded: LoadedSuite, registry, *, out: str | Path = "results", resume: bool = False,
              run_dir: str | Path | None = None, max_concurrent: int | None = None, address: str | None = None,
              cache_dir: str | None = None, quiet: bool = False, trackers: tuple[str, ...] = (),
              datasets: dict[str, dict] | None = None, nodes: list[dict] | None = None,
              tune_storage: str | None = None, rerun_stale: bool = False) -> RunSummary:
    """``datasets``: the driver's preflight of each dataset section (absolute options, fingerprint);
    ``nodes``: what each cluster node reported in the plugin check. Both are recorded in run.json.
    ``tune_storage``: where Ray Tune keeps its own state and logs (a path or a pyarrow-filesystem URI
    such as s3://bucket/prefix); default: the run folder's tune/.
    ``rerun_stale``: run again the finished trials of a resumed run recorded on another catalogue
    than ``datasets`` fingerprints (else such a run is refused, see ``check_catalogues``)."""
    from bench.reporting.trackers import resolve_trackers
    from bench.running.stale_rows import drop_stale

    out = Path(out)
    suite = loaded.suite
    chosen_trackers = resolve_trackers(suite.trackers, file=str(loaded.path), cli_names=tuple(trackers))
    specs = {t.key: t for t in loaded.trials}
    stale = check_catalogues(loaded, out=out, resume=resume, run_dir=run_dir, datasets=datasets,
                             rerun_stale=rerun_stale)
    if run_dir is not None:
        run = RunDir(Path(run_dir))
        run.path.mkdir(parents=True, exist_ok=True)
    elif resume:
        run = latest_run_dir(out, suite.name)
    else:
        run = new_run_dir(out, suite.name)
    if stale:
        drop_stale(run, stale)
        if not quiet:
            print(f"running again {len(stale)} trials recorded on an earlier catalogue", file=sys.stderr)
    finished = run.finished_keys(only_done=True) & set(specs)
    pending = [t for t in loaded.trials if t.key not in finished]
    if resume and not quiet:
        print(f"resuming {run.path}: kept {len(finished)} finished trials, running {len(pending)}", file=sys.stderr)
    prov = provenance(registry.distributions, loaded.text_hash, loaded.path.resolve().parent)
    atomic_write_text(run.path / "suite.yaml", yaml.safe_dump(loaded.raw, sort_keys=False))
    meta = run.read_meta()
    meta.update({"suite": suite.name, "suite_file": str(loaded.path), "suite_hash": loaded.text_hash,
                 "plugins": registry.distributions, "trial_keys": list(specs),
                 "plugin_load_errors": dict(registry.load_errors),
                 "axes": loaded.axes, "datasets": list((datasets or {}).values()), "nodes": nodes or [],
                 **{k: v for k, v in prov.items() if k != "plugins"}})
    meta.setdefault("started", datetime.now(timezone.utc).isoformat())
    meta.setdefault("resumed", [])
    if resume:
        meta["resumed"].append(datetime.now(timezone.utc).isoformat())
    run.write_meta(meta)
    ended: set[str] = set()
    if pending:
        ended = _tune(loaded, registry, run, pending, specs, len(finished), max_concurrent, address, cache_dir, quiet,
                      prov, chosen_trackers, datasets or {}, tune_storage)
    # a trial that never ended (the run was interrupted) has no row: --resume runs it, and it is not a failure
    unfinished = [t.key for t in pending if t.key not in ended]
    rows = run.consolidate()
    rows = rows.filter(pl.col("trial_key").is_in(list(specs))) if not rows.is_empty() else rows
    lb = spec_from_suite(suite)
    if not rows.is_empty():
        from bench.reporting.write import load_predictions, write_run_reports

        predictions = load_predictions(run.path)
        atomic_write_text(run.path / "leaderboard.md", render_markdown(rows, lb, predictions))
        try:  # plots and the HTML page are extras: never fail a finished run over them
            write_run_reports(run.path, rows, lb, predictions)
        except Exception:
            log.warning("could not write plots / leaderboard.html into %s (rerun `bench plot %s`)",
                        run.path, run.path, exc_info=True)
    counts = rows["status"].value_counts() if not rows.is_empty() else pl.DataFrame({"status": [], "count": []})
    n = dict(zip(counts["status"].to_list(), counts["count"].to_list()))
    ok, stopped = n.get("ok", 0), n.get("stopped", 0)
    # a trial that ended without a row (its row could not be written) counts as failed, never as nothing
    failed = len(specs) - ok - stopped - len(unfinished)
    summary = RunSummary(run.path, suite.name, len(specs), len(finished), ok, failed, rows, stopped, len(unfinished))
    from bench.api.plugins import lifecycle_hooks

    lifecycle_hooks(run.path).bench_suite_finished(run=replace(summary, rows=summary.rows.clone()))
    return summary


def read_only(row: dict[str, Any]) -> MappingProxyType:
    """What a lifecycle hook gets: a read-only copy, so a hook cannot change the row that is stored
    or shown (nor, through a nested value, anything else)."""
    return MappingProxyType(copy.deepcopy(row))


def check_catalogues(loaded: LoadedSuite, *, out: str | Path, resume: bool, run_dir: str | Path | None,
                     datasets: dict[str, dict] | None, rerun_stale: bool = False) -> set[str]:
    """Before anything starts: the run to resume (``run_dir``, or the latest under ``out``) must hold
    no finished row recorded on another catalogue than the preflight's, unless ``rerun_stale``.
    Returns the keys of the stale trials to run again (empty for a new run). Raises a BenchError
    (exit 2) for a refused run, and for --resume with nothing to resume."""
    from bench.running.stale_rows import refuse_stale, stale_trials

    if run_dir is not None:
        run = RunDir(Path(run_dir))
    elif resume:
        run = latest_run_dir(Path(out), loaded.suite.name)
        if run is None:
            raise BenchError(f"nothing to resume: no earlier run of suite '{loaded.suite.name}' under {out}",
                             fix="run without --resume first, or pass --out where the earlier run lives")
    else:
        return set()
    specs = {t.key: t for t in loaded.trials}
    stale = stale_trials(run, specs, datasets or {})
    if not rerun_stale:
        refuse_stale(run, stale, specs)
    return set(stale)


def make_scheduler(cfg):
    """Ray Tune's own ASHA or median-stopping rule over the per-evaluation dev reports."""
    if cfg is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    if cfg.name == "asha":
        # ASHA stops every trial that reaches max_t; a trial that ends with its epochs is not "stopped"
        return ASHAScheduler(time_attr="evaluation", metric=cfg.metric, mode=cfg.mode, max_t=cfg.max_t or 10**6,
                             grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor)
    return MedianStoppingRule(time_attr="evaluation", metric=cfg.metric, mode=cfg.mode,
                              grace_period=cfg.grace_period, min_samples_required=cfg.min_samples_required)


def _tune(loaded, registry, run: RunDir, pending: list[TrialSpec], specs, kept: int, max_concurrent, address,
          cache_dir, quiet, prov, trackers=(), datasets: dict[str, dict] | None = None,
          tune_storage: str | None = None) -> set[str]:
    """Run the pending trials; returns the keys of those that ended (each with its row). On Ctrl-C
    Tune stops the trials and returns (a second Ctrl-C cuts that short): the others never ended."""
    from ray import tune

    from bench.reporting.progress import RunProgress
    from bench.reporting.trackers import tracker_context

    preflight_ray(loaded, address)  # starts or joins Ray; refuses a trial the cluster cannot hold
    suite = loaded.suite
    resources = {"cpu": suite.resources.cpu, "gpu": suite.resources.gpu}
    spec_dicts = {t.key: {"key": t.key, "axes": t.axes, "hyper": t.hyper, "config": t.config} for t in pending}
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, specs=spec_dicts, cpus=suite.resources.cpu, gpus=suite.resources.gpu,
                             cache_dir=cache_dir, prov=prov, datasets=datasets or {}),
        resources)
    progress = RunProgress(suite.name, len(specs), kept, quiet=quiet)
    scheduler = suite.search.scheduler if suite.search else None
    callback = _make_callback(run, specs, progress, spec_from_suite(suite), prov, scheduler.name if scheduler else None)
    tracker_ctx = tracker_context(run.path, suite.name, pending)
    callbacks = [callback, *[t.callback(tracker_ctx) for t in trackers]]
    tuner = tune.Tuner(
        trainable,
        param_space={"trial_key": tune.grid_search([t.key for t in pending])},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or suite.max_concurrent, reuse_actors=True,
                                    scheduler=make_scheduler(scheduler)),
        run_config=tune.RunConfig(
            # Tune's own state and per-trial logs; trial results never depend on it (they travel in reports)
            name="tune", storage_path=tune_storage or str((run.path / "tune").resolve()), verbose=0, callbacks=callbacks,
            # each trial's stdout/stderr go to files in its folder under tune/, not the terminal
            log_to_file=True, sync_config=tune.SyncConfig(sync_artifacts=True),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    with progress:
        try:
            tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C while Tune was stopping the trials
            log.warning("interrupted again while the trials were stopping")
    return set(callback.ended)
