"""One trial, end to end: data -> splits -> model -> stages -> evaluation -> one row.

``run_trial`` never raises for a problem inside the trial: it returns a row with status
"failed" and the error, so a suite always completes.
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from typing import Any

import polars as pl
import torch

from bench.config.schema import TrialConfig, TrialSpec
from bench.errors import BenchError, TrialFailure
from bench.trial.context import TrialContext
from bench.trial.device import set_threads
from bench.trial.memory import PeakMemory
from bench.trial.prepare import seed_everything
from bench.trial.session import open_trial


@dataclass
class TrialOutcome:
    row: dict[str, Any]
    predictions: pl.DataFrame | None = None
    curve: pl.DataFrame | None = None


def base_row(spec: TrialSpec, status: str = "ok", error: str = "") -> dict[str, Any]:
    """The columns every row has, whatever happened to the trial: what it was and how it ended."""
    return {"trial_key": spec.key, **spec.axes, **spec.hyper, "seed": spec.config.get("seed", 0),
            "status": status, "error": error}


def run_trial(spec: TrialSpec, ctx: TrialContext) -> TrialOutcome:
    start = time.perf_counter()
    row = base_row(spec)
    predictions = None
    curve: list[dict[str, Any]] = []
    memory = PeakMemory()
    try:
        with memory:
            metrics, predictions = _execute(spec, ctx, curve)
        row.update(metrics)
    except BenchError as exc:
        row.update(status="failed", error=exc.render())
    except TrialFailure as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except torch.cuda.OutOfMemoryError as exc:
        row.update(status="failed", error=f"out of memory: {exc}")
    except Exception as exc:  # a plugin bug must not end the suite; keep the stack for the log
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   traceback="".join(traceback.format_exception(exc))[-4000:])
    row["wall_s"] = round(time.perf_counter() - start, 3)
    row["peak_mem_mb"] = memory.peak_mb
    row["config"] = json.dumps(spec.config, sort_keys=True)
    row.update(ctx.provenance)
    return TrialOutcome(row, predictions, curve_table(curve, spec.key))


def curve_table(points: list[dict[str, Any]], key: str) -> pl.DataFrame | None:
    """The learning curve: one row per evaluation (stage, epoch, step, train loss and parts, dev metrics)."""
    if not points:
        return None
    frame = pl.from_dicts(points, infer_schema_length=None)
    return frame.with_columns(pl.lit(key).alias("trial_key")).select("trial_key", *frame.columns)


def _execute(spec: TrialSpec, ctx: TrialContext, curve: list[dict[str, Any]]) -> tuple[dict[str, Any], pl.DataFrame | None]:
    cfg = TrialConfig.model_validate(spec.config)
    set_threads(ctx.cpus)
    seed_everything(cfg.seed)
    run = open_trial(cfg, ctx)  # the task plugin prepares the data; the loop asks it at every step
    run.curve = curve  # the caller keeps the curve even when training fails half-way
    losses = run.train()
    dev, test = run.evaluate()
    metrics = run.metrics(dev, test)
    return {**metrics, **losses}, run.prediction_table(spec.key, test)
