"""Rows of a resumed run whose catalogue has changed since they were recorded.

A trial's key hashes its config (the dataset's options, its path), not the data: after the files
under that path change, ``--resume`` would keep the old rows and run only the new trials, and one
leaderboard would mix two catalogues. The catalogue's content fingerprint, recorded in every row
(``data_fingerprint``) and computed again by the preflight, tells such rows apart: a run either
refuses to go on, or (``--rerun-stale``) runs those trials again.
"""
from __future__ import annotations

import polars as pl

from bench.config.schema import TrialSpec
from bench.errors import BenchError
from bench.reporting.results import CURVES, DONE_STATUSES, PREDICTIONS, ROWS, RunDir

RERUN_FLAG = "--rerun-stale"


def stale_trials(run: RunDir, specs: dict[str, TrialSpec], datasets: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """trial_key -> (stored fingerprint, today's) of every finished row of ``specs`` recorded on
    another catalogue than the preflight's. Rows without a fingerprint (stopped by a scheduler,
    written by an older version) cannot be told apart and are left as they are."""
    from bench.running.cluster import dataset_key

    rows = run.read_rows()
    if rows.is_empty() or "data_fingerprint" not in rows.columns or not datasets:
        return {}
    done = rows.filter(pl.col("status").is_in(DONE_STATUSES) & pl.col("data_fingerprint").is_not_null())
    stale = {}
    for key, stored in zip(done["trial_key"].to_list(), done["data_fingerprint"].to_list()):
        spec = specs.get(key)
        now = datasets.get(dataset_key(spec.config["dataset"]), {}).get("fingerprint") if spec else None
        if now and stored != now:
            stale[key] = (stored, now)
    return stale


def refuse_stale(run: RunDir, stale: dict[str, tuple[str, str]], specs: dict[str, TrialSpec]) -> None:
    """A BenchError (exit 2) naming the run folder, how many trials are stale and the two fingerprints."""
    if not stale:
        return
    labels = ", ".join(specs[k].label() for k in list(stale)[:3]) + (" ..." if len(stale) > 3 else "")
    stored, now = next(iter(stale.values()))
    raise BenchError(f"the data changed since {len(stale)} finished trial(s) of this run were recorded: {labels} "
                     f"(catalogue fingerprint {stored[:12]} then, {now[:12]} now); resuming would mix two catalogues "
                     "in one leaderboard", file=run.path, field="--resume",
                     fix=f"start a new run (without --resume), or pass {RERUN_FLAG} to run those trials again "
                         "on today's data")


def drop_stale(run: RunDir, keys) -> None:
    """Remove the files of trials about to run again, so no old prediction table or curve is left
    beside the new row (a trial that never ends again is then simply pending)."""
    for key in keys:
        for folder in (ROWS, PREDICTIONS, CURVES):
            (run.path / folder / f"{key}.parquet").unlink(missing_ok=True)
