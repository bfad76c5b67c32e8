"""Real Ray Tune runs: smoke suite, failed trials recorded, resume after kill -9, leaderboard regeneration."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from bench.running.ray_sessions import RECORD, orphans, ray_temp_root
from bench.reporting.write import leaderboard_for_run
from conftest import invoke_bench, run_bench, tiny_trial


def _run_dir(out: Path, suite: str) -> Path:
    runs = sorted((out / suite).iterdir())
    assert len(runs) == 1
    return runs[0]


def test_smoke_suite_runs_and_leaderboard_regenerates_identically(smoke_run):
    """The real `bench run` in this process on the shared Ray session (conftest.smoke_run, whose log
    test_progress reads; `bench run` in fresh processes: test_kill_then_resume_runs_each_trial_exactly_once
    and the run behind test_failed_trials_are_recorded_and_the_suite_completes)."""
    code, out, _, _ = smoke_run
    assert code == 0
    run = _run_dir(out, "smoke")
    rows = pl.read_parquet(run / "trials.parquet")
    assert rows.height == 2 and set(rows["status"]) == {"ok"}
    for col in ("fusion", "seed", "accuracy", "macro_f1", "top5_accuracy", "train_samples_per_s",
                "eval_samples_per_s", "wall_s", "peak_mem_mb", "n_params", "n_trainable_params", "v_torch",
                "v_mic_bench", "suite_hash", "host_cpu", "plugins", "config", "error"):
        assert col in rows.columns, col
    assert rows["accuracy"].is_between(0, 1).all() and (rows["n_params"] > 0).all()
    preds = pl.read_parquet(next((run / "predictions").glob("*.parquet")))
    assert {"item_id", "true_label", "pred_label", "topk_scores"} <= set(preds.columns)
    assert preds.height == rows["n_test"][0]
    written = (run / "leaderboard.md").read_text()
    assert written == leaderboard_for_run(run, "md")
    assert "text_only" in written and "image_only" in written
    regen = invoke_bench("leaderboard", run, "--format", "csv")
    assert regen.returncode == 0 and regen.stdout.splitlines()[0].startswith("rank,")


def test_failed_trials_are_recorded_and_the_suite_completes(faults_run):
    """Every way a trial can fail, the timeout included: each is a failed row with its reason, and
    the others still finish."""
    proc, run = faults_run
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = pl.read_parquet(run / "trials.parquet")
    status = dict(zip(rows["method"], rows["status"]))
    errors = dict(zip(rows["method"], rows["error"]))
    assert status == {"fine": "ok", "film": "ok", "raises": "failed", "dies": "failed", "nan": "failed",
                      "bad_weights": "failed", "slow": "failed"}
    assert "worker crashed" in errors["dies"]
    assert "fusion exploded on purpose" in errors["raises"]
    assert "loss became nan" in errors["nan"]
    assert "weights file not found" in errors["bad_weights"] and "/no/such/weights.safetensors" in errors["bad_weights"]
    assert "max_trial_minutes" in errors["slow"]  # the timeout marks the trial failed
    board = (run / "leaderboard.md").read_text()
    assert "## Failed trials" in board and "fusion exploded on purpose" in board


def _session_record(driver_pid: int) -> dict:
    """The session record the running driver wrote into its Ray session folder (bench/running/ray_sessions.py)."""
    for path in ray_temp_root().glob(f"session_*/{RECORD}"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record["driver_pid"] == driver_pid:
            return record
    raise AssertionError(f"no Ray session record of driver {driver_pid}")


def test_kill_then_resume_runs_each_trial_exactly_once(outside_plugins, write_suite, tmp_path):
    trial = tiny_trial(fusion={"name": "sleeps", "options": {"seconds": 0.15}})
    suite = write_suite({"name": "killme", "trial": trial, "matrix": {"seed": [0, 1, 2, 3]}, "max_concurrent": 1})
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(tmp_path), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    rows_dir = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("killme/*/rows/*.parquet"))
        if found:
            rows_dir = found[0].parent
            break
        time.sleep(0.2)
    assert rows_dir is not None, "no trial finished before the deadline"
    record = _session_record(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {p.stem for p in rows_dir.glob("*.parquet")}
    mtimes = {p.stem: p.stat().st_mtime_ns for p in rows_dir.glob("*.parquet")}
    assert 1 <= len(finished_before) < 4
    resumed = run_bench("run", suite, "--out", tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the killed driver's Ray processes (agents, trial workers in their own process groups) were ended
    assert orphans(record) == [], "Ray processes of the killed run are still running"
    # a worker of the killed run may still land one more row before it notices; it is kept too
    kept = int(re.search(r"kept (\d+) finished trials", resumed.stderr).group(1))
    assert len(finished_before) <= kept < 4
    rows = pl.read_parquet(rows_dir.parent / "trials.parquet")
    assert rows.height == 4 and rows["trial_key"].n_unique() == 4 and set(rows["status"]) == {"ok"}
    for key, mtime in mtimes.items():  # finished rows were kept, not rewritten
        assert (rows_dir / f"{key}.parquet").stat().st_mtime_ns == mtime
