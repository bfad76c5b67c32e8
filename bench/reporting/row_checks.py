"""Stored rows are checked when read, not trusted as they are.

Every row the project has written holds ``trial_key`` and ``status``; a row file holds one row and
is named by its key. A file without them, two files of one trial (a copy counts as a second seed,
std 0), a status the leaderboard does not know, or a metric stored as text (which would turn the
whole column into text when the rows are merged, and so drop it from every leaderboard) would each
change what a leaderboard says without a word. Each is refused with the file named.
"""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from bench.errors import BenchError

REQUIRED = ("trial_key", "status")
STATUSES = ("ok", "failed", "stopped")
_FIX = "delete that file and run `bench run --resume` to redo the trial"
# Metric columns by name (docs/metrics.md): the figures of quality and cost a leaderboard aggregates.
_METRIC = re.compile(r"(?:accuracy|top\d+_accuracy|(?:head_|tail_)?macro_f1|f1|f1_all|(?:ndcg|mar|p|map|mrr)@\d+"
                     r"|recall@1|pair_(?:f1|precision|recall|ap)|train_samples_per_s|eval_samples_per_s|wall_s"
                     r"|peak_mem_mb|gpu_peak_mem_mb|n_params|n_trainable_params|train_s)")


def metric_columns(names) -> list[str]:
    """The columns among ``names`` that hold a metric (numbers or null), test or ``dev_`` ones."""
    return [n for n in names if _METRIC.fullmatch(n[4:] if n.startswith("dev_") else n)]


def check_schema(schema: pl.Schema, file: Path) -> None:
    """Required columns present; every metric column numeric (or all null)."""
    missing = [c for c in REQUIRED if c not in schema]
    if missing:
        raise BenchError(f"not a result row: no {' or '.join(missing)} column (every row mic-bench writes has both)",
                         file=file, fix=_FIX)
    for name in metric_columns(schema.names()):
        dtype = schema[name]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise BenchError(f"metric '{name}' is stored as {dtype}, not as a number", file=file, field=name,
                             fix=_FIX)


def check_statuses(statuses: pl.Series, file: Path) -> None:
    unknown = sorted({s for s in statuses.unique().to_list() if s not in STATUSES}, key=str)
    if unknown:
        raise BenchError(f"unknown status {', '.join(repr(s) for s in unknown)} (a row is one of "
                         f"{', '.join(STATUSES)})", file=file, field="status", fix=_FIX)


def check_row_file(frame: pl.DataFrame, file: Path) -> None:
    """One row file: the schema, exactly one row, a known status."""
    check_schema(frame.schema, file)
    if frame.height != 1:
        raise BenchError(f"a row file holds one trial's row; this one holds {frame.height}", file=file, fix=_FIX)
    check_statuses(frame["status"], file)


def check_unique_keys(keys: list[str], files: list[Path]) -> None:
    """One row per trial: a row file copied under a second name is not a second seed."""
    seen: dict[str, Path] = {}
    for key, file in zip(keys, files):
        if key in seen:
            raise BenchError(f"two row files hold trial {key}: {seen[key].name} and {file.name}", file=file,
                             field="trial_key", fix=f"keep only {key}.parquet (a copy would count as a second seed)")
        seen[key] = file


def check_table(keys: pl.Series, statuses: pl.Series, file: Path) -> None:
    """trials.parquet (or another merged table): one row per trial_key, known statuses."""
    repeated = keys.filter(keys.is_duplicated()).unique().sort().to_list()
    if repeated:
        raise BenchError(f"{len(repeated)} trial(s) have more than one row (e.g. {repeated[0]})", file=file,
                         field="trial_key", fix="delete it; `bench leaderboard` rebuilds it from rows/")
    check_statuses(statuses, file)
