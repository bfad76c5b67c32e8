"""Stored rows are checked when read (bench/reporting/row_checks.py) and trials.parquet is reconciled
with rows/: a leaderboard never counts a copied row file as a second seed, never loses a metric
column to one row stored as text, never shows a row deleted by hand, never trusts a row without a
status."""
from __future__ import annotations

import os
import re
import shutil

import polars as pl
import pytest

from bench.errors import BenchError
from bench.reporting.results import RunDir, load_run
from bench.reporting.write import leaderboard_for_run


def _run(tmp_path, seeds=(0, 1, 2)) -> RunDir:
    run = RunDir(tmp_path / "run")
    for seed in seeds:
        run.write_row({"trial_key": f"k{seed}", "fusion": "late", "seed": seed, "status": "ok", "error": "",
                       "accuracy": 0.5 + seed / 10})
    run.consolidate()
    return run


def _edit(path, frame: pl.DataFrame) -> None:
    """A row file rewritten by hand, later than the merge into trials.parquet."""
    frame.write_parquet(path)
    later = (path.parents[1] / "trials.parquet").stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))


def _refused(run: RunDir) -> BenchError:
    with pytest.raises(BenchError) as err:
        load_run(run.path)
    return err.value


def test_a_row_file_copied_under_a_second_name_is_refused(tmp_path):
    run = _run(tmp_path)
    shutil.copy(run.rows_dir / "k1.parquet", run.rows_dir / "k1 (copy).parquet")
    err = _refused(run)
    assert "two row files hold trial k1: k1 (copy).parquet and k1.parquet" in err.message
    assert err.field == "trial_key" and "keep only k1.parquet" in err.fix
    with pytest.raises(BenchError):
        run.consolidate()


def test_a_metric_stored_as_text_is_refused_naming_the_file(tmp_path):
    run = _run(tmp_path)
    pl.DataFrame([{"trial_key": "k1", "fusion": "late", "seed": 1, "status": "ok", "error": "",
                   "accuracy": "0.6"}]).write_parquet(run.rows_dir / "k1.parquet")
    merged = pl.concat([pl.read_parquet(f) for f in sorted(run.rows_dir.iterdir())], how="diagonal_relaxed")
    assert merged.schema["accuracy"] == pl.String  # what an unchecked merge made of the column
    merged.write_parquet(run.path / "trials.parquet")
    err = _refused(run)
    assert err.file.endswith("rows/k1.parquet") and err.field == "accuracy"
    assert "metric 'accuracy' is stored as String, not as a number" in err.message
    # merged into trials.parquet already, the table is refused too (without rows/, nothing to fall back on)
    shutil.rmtree(run.rows_dir)
    pl.DataFrame({"trial_key": ["k0", "k1"], "status": ["ok", "ok"], "dev_macro_f1": ["0.5", "x"]}).write_parquet(
        run.path / "trials.parquet")
    err = _refused(run)
    assert err.file.endswith("trials.parquet") and err.field == "dev_macro_f1"


@pytest.mark.parametrize("drop", ["status", "trial_key"])
def test_a_row_without_status_or_trial_key_is_refused(tmp_path, drop):
    run = _run(tmp_path)
    row = pl.read_parquet(run.rows_dir / "k2.parquet").drop(drop)
    _edit(run.rows_dir / "k2.parquet", row.with_columns(pl.lit("boom").alias("error")))
    err = _refused(run)
    assert err.file.endswith("rows/k2.parquet") and f"no {drop} column" in err.message


def test_an_unknown_status_or_a_file_of_two_rows_is_refused(tmp_path):
    run = _run(tmp_path)
    _edit(run.rows_dir / "k2.parquet", pl.read_parquet(run.rows_dir / "k2.parquet").with_columns(pl.lit("OK").alias("status")))
    assert "unknown status 'OK'" in _refused(run).message
    _edit(run.rows_dir / "k2.parquet", pl.concat([pl.read_parquet(run.rows_dir / "k1.parquet")] * 2))
    assert "this one holds 2" in _refused(run).message


def test_a_row_file_deleted_by_hand_no_longer_shows_from_a_stale_trials_parquet(tmp_path):
    run = _run(tmp_path)
    (run.rows_dir / "k2.parquet").unlink()  # as the leaderboard's fix text for a bad row says
    _, rows = load_run(run.path)
    assert sorted(rows["trial_key"].to_list()) == ["k0", "k1"]
    assert re.search(r"\| late +\| [^|]+\| 2 +\| 0 +\|", leaderboard_for_run(run.path, "md"))  # n = 2, not 3


def test_a_row_file_rewritten_after_the_merge_is_read_from_rows(tmp_path):
    run = _run(tmp_path)
    _edit(run.rows_dir / "k2.parquet", pl.DataFrame([{"trial_key": "k2", "fusion": "late", "seed": 2,
                                                       "status": "failed", "error": "redone: boom"}]))
    _, rows = load_run(run.path)
    assert dict(zip(rows["trial_key"], rows["status"]))["k2"] == "failed"


def test_a_sound_run_reads_trials_parquet(tmp_path):
    """In step with rows/, the merged table is what is read (one file, not one per trial)."""
    from bench.reporting.results import stored_rows

    run = _run(tmp_path)
    assert stored_rows(run.path).scan is not None
    assert sorted(load_run(run.path)[1]["trial_key"].to_list()) == ["k0", "k1", "k2"]
