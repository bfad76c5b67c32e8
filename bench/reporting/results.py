"""The results store: one parquet row file per finished trial, merged into trials.parquet.

Layout of a run folder (results/<suite>/<run-id>/):
    suite.yaml        the suite as run (leaderboards regenerate from it and the rows)
    run.json          provenance: plugins, versions, suite hash, start time, trial keys
    rows/<key>.parquet           one row per finished trial (written atomically, never rewritten)
    predictions/<key>.parquet    test predictions of that trial
    curves/<key>.parquet         learning curve: train loss and dev metrics after every evaluation
    trials.parquet    all rows (rebuilt atomically from rows/ after every trial)
    leaderboard.md    (and .csv / .html on request)
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from bench.errors import BenchError
from bench.storage.paths import atomic_path, atomic_write_text
from bench.reporting.row_checks import check_row_file, check_schema, check_table, check_unique_keys

ROWS, PREDICTIONS, CURVES, TRIALS = "rows", "predictions", "curves", "trials.parquet"
# Statuses of trials that are done: `ok`, and `stopped` (a Tune scheduler ended it early; its row
# holds the best dev metrics it reached). `failed` trials run again on --resume.
DONE_STATUSES = ("ok", "stopped")
log = logging.getLogger(__name__)


@dataclass
class RunDir:
    path: Path

    @property
    def rows_dir(self) -> Path:
        return self.path / ROWS

    def write_row(self, row: dict[str, Any], predictions: pl.DataFrame | None = None,
                  curve: pl.DataFrame | None = None) -> None:
        """Persist one finished trial; predictions and curve first so a row never points at nothing."""
        key = row["trial_key"]
        for folder, frame in ((PREDICTIONS, predictions), (CURVES, curve)):
            if frame is not None:
                with atomic_path(self.path / folder / f"{key}.parquet") as tmp:
                    frame.write_parquet(tmp)
        with atomic_path(self.rows_dir / f"{key}.parquet") as tmp:
            row_frame(row).write_parquet(tmp)

    def write_row_or_note(self, row: dict[str, Any], predictions: pl.DataFrame | None = None,
                          curve: pl.DataFrame | None = None) -> dict[str, Any]:
        """Write a trial's files; when that fails (disk full, rows/ gone), log it and return the row
        marked failed with the write error, so the run reports the trial failed and goes on."""
        try:
            self.write_row(row, predictions, curve)
            return row
        except OSError as exc:
            note = f"its row could not be written to {self.rows_dir}: {exc.strerror or exc}"
            log.error("trial %s: %s", row.get("trial_key"), note)
            return {**row, "status": "failed", "error": "; ".join(e for e in (row.get("error"), note) if e)}

    def finished_keys(self, *, only_done: bool = False) -> set[str]:
        rows = self.read_rows()
        if rows.is_empty():
            return set()
        if only_done:
            rows = rows.filter(pl.col("status").is_in(DONE_STATUSES))
        return set(rows["trial_key"].to_list())

    def read_rows(self) -> pl.DataFrame:
        """All trial rows; a corrupt or unsound row file (bench/reporting/row_checks.py) is an error
        naming it, never silently dropped or trusted."""
        frames, files = [], self.row_files()
        for f in files:
            try:
                frame = pl.read_parquet(f)
            except Exception as exc:
                raise BenchError(f"corrupt result file ({exc})", file=f,
                                 fix="delete it and run `bench run --resume` to redo that trial") from None
            check_row_file(frame, f)
            frames.append(frame)
        if not frames:
            return pl.DataFrame()
        check_unique_keys([frame["trial_key"][0] for frame in frames], files)
        return pl.concat(frames, how="diagonal_relaxed")

    def row_files(self) -> list[Path]:
        return sorted(self.rows_dir.glob("*.parquet")) if self.rows_dir.exists() else []

    def consolidate(self) -> pl.DataFrame:
        rows = self.read_rows()
        if not rows.is_empty():
            try:
                with atomic_path(self.path / TRIALS) as tmp:
                    rows.write_parquet(tmp)
            except OSError as exc:  # the rows stay the record; trials.parquet is rebuilt from them later
                log.error("could not write %s (%s); `bench leaderboard` rebuilds it from rows/",
                          self.path / TRIALS, exc.strerror or exc)
        return rows

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(meta, indent=2, sort_keys=True, default=str))

    def read_meta(self) -> dict[str, Any]:
        f = self.path / "run.json"
        return json.loads(f.read_text()) if f.exists() else {}


def row_frame(row: dict[str, Any]) -> pl.DataFrame:
    """One-row frame; values that are not scalars are stored as JSON text."""
    clean = {k: (json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else v) for k, v in row.items()}
    return pl.DataFrame([clean], infer_schema_length=None)


RUN_ID = re.compile(r"^(\d{8}-\d{6})(?:-(\d{6}))?(?:-(\d+))?$")


def new_run_dir(out: Path, suite_name: str) -> RunDir:
    """A new run folder named by its UTC start time to the microsecond, with -2, -3 ... on a tie.

    Created with mkdir (never exists-then-create), so concurrent runs into one --out cannot
    collide; the names sort in creation order (see ``run_order``).
    """
    base = out / suite_name
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create the results folder: {exc.strerror or exc}", file=base, field="--out",
                         fix="pass a folder you can write to for --out") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    for n in range(1, 10_000):
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return RunDir(path)
        except FileExistsError:
            continue
    raise BenchError("could not find a free run folder name", file=base, field="--out",
                     fix="remove old runs under this folder")


def run_order(path: Path) -> tuple:
    """Sort key of run folders, oldest first: the time and tie-breaker in the name, else run.json's start."""
    match = RUN_ID.match(path.name)
    if match:
        return (match.group(1), match.group(2) or "000000", int(match.group(3) or 1), path.name)
    try:
        started = json.loads((path / "run.json").read_text()).get("started", "")
        moment = datetime.fromisoformat(started).astimezone(timezone.utc)
        return (moment.strftime("%Y%m%d-%H%M%S"), moment.strftime("%f"), 0, path.name)
    except (OSError, ValueError, TypeError, AttributeError):
        return ("", "", 0, path.name)


def latest_run_dir(out: Path, suite_name: str) -> RunDir | None:
    base = out / suite_name
    runs = sorted((p for p in base.iterdir() if (p / "run.json").exists()), key=run_order) if base.is_dir() else []
    return RunDir(runs[-1]) if runs else None


def load_run(path: str | Path, skip: tuple[str, ...] = ()) -> tuple[RunDir, pl.DataFrame]:
    """A run folder's rows for leaderboards: trials.parquet, or the row files if it is missing.

    ``skip`` names columns the caller never reads; they are not even read from the parquet file.
    A reader that chooses its columns from the stored ones first uses ``stored_rows``.
    """
    stored = stored_rows(path)
    return stored.run, stored.read(skip=skip)


@dataclass
class StoredRows:
    """A run folder's rows before they are read: ``header`` (their columns and types) and ``read`` of
    the columns a caller chose from it, from one opening of trials.parquet (its footer is read once)."""
    run: RunDir
    header: pl.Schema
    scan: pl.LazyFrame | None = None  # trials.parquet
    rows: pl.DataFrame | None = None  # the row files, read already, when trials.parquet is missing

    def read(self, columns: list[str] | None = None, skip: tuple[str, ...] = ()) -> pl.DataFrame:
        """``load_run``'s rows: only ``columns`` if given, else all but ``skip``."""
        if self.scan is not None:
            try:
                rows = (self.scan.select(columns) if columns is not None else self.scan.drop(skip, strict=False)).collect()
            except Exception as exc:
                raise _corrupt(self.run.path / TRIALS, exc) from None
        else:
            rows = self.rows.select(columns) if columns is not None else self.rows.drop(skip, strict=False)
        if rows.is_empty():
            raise BenchError("the run has no finished trials yet", file=self.run.path, fix="run or resume the suite first")
        return rows


def stored_rows(path: str | Path) -> StoredRows:
    """The run folder's ``StoredRows``: trials.parquet when it is sound and in step with rows/, else
    the row files (checked one by one, bench/reporting/row_checks.py)."""
    run = _run_folder(path)
    trials = run.path / TRIALS
    if trials.exists():
        scan = pl.scan_parquet(trials)
        try:
            header = scan.collect_schema()
        except Exception as exc:
            raise _corrupt(trials, exc) from None
        try:
            check_schema(header, trials)
            try:
                index = scan.select("trial_key", "status").collect()
            except Exception as exc:
                raise _corrupt(trials, exc) from None
            check_table(index["trial_key"], index["status"], trials)
        except BenchError:
            if not run.rows_dir.is_dir():
                raise
            index = None  # the row files are the record: read them, and name the one at fault
        if index is not None and _in_step(run, index["trial_key"], trials):
            return StoredRows(run, header, scan=scan)
        log.info("%s does not match %s; reading the row files", trials, run.rows_dir)
    rows = run.read_rows()
    if rows.is_empty():
        raise BenchError("the run has no finished trials yet", file=path, fix="run or resume the suite first")
    return StoredRows(run, rows.schema, rows=rows)


def _in_step(run: RunDir, keys: pl.Series, trials: Path) -> bool:
    """trials.parquet holds the rows of rows/: the same trials, none rewritten since it was merged
    (a row file deleted or replaced by hand must not still show from it). Without rows/ (a table
    assembled elsewhere) it is the record itself."""
    if not run.rows_dir.is_dir():
        return True
    files = run.row_files()
    if {f.stem for f in files} != set(keys.to_list()) or len(files) != len(keys):
        return False
    merged = trials.stat().st_mtime_ns
    return all(f.stat().st_mtime_ns <= merged for f in files)


def _run_folder(path: str | Path) -> RunDir:
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise BenchError("run folder not found", file=path, fix="pass a folder under results/<suite>/")
    return run


def _corrupt(trials: Path, exc: Exception) -> BenchError:
    return BenchError(f"corrupt results table ({exc})", file=trials,
                      fix="delete it; `bench leaderboard` rebuilds it from rows/")
