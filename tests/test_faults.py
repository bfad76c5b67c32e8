"""Faults while a run goes on: raising hooks, concurrent runs, many runs in one second, the cache marker,
a local Ray instance's token. (docs/bad-inputs.md, "Faults during a run", lists each with its test.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from bench.reporting.results import RunDir, latest_run_dir, new_run_dir, run_order
from conftest import run_bench, tiny_trial

ROOT = Path(__file__).resolve().parents[1]


def test_concurrent_run_folders_never_collide(tmp_path):
    """Twenty runs asking for a folder at the same instant each get their own (no FileExistsError)."""
    barrier = threading.Barrier(20)
    made, errors = [], []

    def start():
        barrier.wait()
        try:
            made.append(new_run_dir(tmp_path, "suite").path)
        except Exception as exc:  # the old exists-then-mkdir raced here
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 20 and all(p.is_dir() for p in made)


def test_concurrent_bench_processes_share_one_out(tmp_path):
    """Four `bench` processes (real ones) creating run folders in the same --out at once."""
    code = ("import sys; from pathlib import Path; from bench.reporting.results import new_run_dir; "
            "print(new_run_dir(Path(sys.argv[1]), 's').path)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len({o[0].strip() for o in outs}) == 4


def test_resume_picks_the_newest_of_ten_runs_in_one_second(tmp_path):
    runs = []
    for _ in range(10):
        run = new_run_dir(tmp_path, "suite")
        run.write_meta({"suite": "suite"})
        runs.append(run.path)
    assert latest_run_dir(tmp_path, "suite").path == runs[-1]
    # ties within one microsecond get -2 ... -10: -10 is newer than -9 though it sorts before it as text
    stamp = "20260101-000000-000001"
    tied = [tmp_path / "tied" / (stamp if n == 1 else f"{stamp}-{n}") for n in range(1, 11)]
    for path in reversed(tied):
        RunDir(path).write_meta({"suite": "tied"})
    assert sorted(tied, key=run_order) == tied
    assert latest_run_dir(tmp_path, "tied").path == tied[-1]
    # a folder named by hand (--run-dir) sorts by the start time in its run.json
    named = tmp_path / "mixed" / "my-run"
    RunDir(named).write_meta({"started": "2099-01-01T00:00:00+00:00"})
    RunDir(tmp_path / "mixed" / "20260101-000000-000001").write_meta({})
    assert latest_run_dir(tmp_path, "mixed").path == named


def test_cache_clear_empties_only_a_marked_cache(tmp_path):
    from bench.storage.paths import cache_dir

    cache = cache_dir(tmp_path / "cache")  # as a run makes it
    assert (cache / ".mic-bench-cache").is_file()  # written when the root was created
    (cache / "tensors" / "ab").mkdir(parents=True)
    (cache / "tensors" / "ab" / "entry.safetensors").write_bytes(b"x")
    cleared = run_bench("cache", "clear", "--yes", "--cache-dir", cache)
    assert cleared.returncode == 0, cleared.stderr
    assert [p.name for p in cache.iterdir()] == [".mic-bench-cache"]
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    refused = run_bench("cache", "clear", "--yes", "--cache-dir", precious)
    assert refused.returncode == 2 and "not a mic-bench cache folder" in refused.stderr
    assert (precious / "thesis.tex").read_text() == "keep me"


@pytest.mark.heavy
def test_a_raising_hook_is_recorded_and_the_suite_goes_on(outside_plugins, tmp_path):
    """Both lifecycle hooks raise; the run still ends ok with every row, and run.json records the errors.
    The same run shows a local Ray instance leaves the user's home alone (no ~/.ray/auth_token)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    suite = work / "suite.yaml"
    suite.write_text(json.dumps({"name": "hooks", "trial": tiny_trial(), "matrix": {"seed": [0, 1]}}))
    env = dict(os.environ, MIC_BENCH_FAULTY_HOOKS="1", HOME=str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(work / "results"),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=900, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "raised in bench_trial_finished (RuntimeError: trial hook broken on purpose); the suite goes on" in proc.stderr
    run = next((work / "results" / "hooks").iterdir())
    rows = pl.read_parquet(run / "trials.parquet")
    assert rows.height == 2 and set(rows["status"]) == {"ok"}
    errors = json.loads((run / "run.json").read_text())["hook_errors"]
    hooks = sorted(e["hook"] for e in errors)
    assert hooks == ["bench_suite_finished", "bench_trial_finished", "bench_trial_finished"], errors
    assert all("broken on purpose" in e["error"] and "mic-bench-faulty" in e["plugin"] for e in errors)
    after = sorted(p.relative_to(work) for p in work.rglob("*") if not p.is_relative_to(work / "results"))
    assert after == before, "something was written outside --out"
    assert not (home / ".ray").exists(), "Ray wrote into the user's home"
    assert "Token authentication is enabled" not in proc.stderr


def test_a_row_that_cannot_be_written_is_reported_failed_not_lost(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / "rows").write_text("a file where the rows folder should be")
    row = run.write_row_or_note({"trial_key": "k", "status": "failed", "error": "the worker crashed"})
    assert row["status"] == "failed"
    assert row["error"].startswith("the worker crashed; its row could not be written to ")


@pytest.mark.heavy
def test_a_trial_whose_results_cannot_be_written_fails_and_the_suite_goes_on(tmp_path):
    from bench.api.plugins import get_registry
    from bench.config.suite import load_suite
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "disk", "trial": tiny_trial(), "matrix": {"seed": [0, 1]}, "max_concurrent": 1}))
    blocked = load_suite(suite, get_registry()).trials[1].key
    run_dir = tmp_path / "run"
    (run_dir / "predictions" / f"{blocked}.parquet").mkdir(parents=True)  # this trial's write will fail
    proc = run_bench("run", suite, "--run-dir", run_dir, "--quiet", timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = pl.read_parquet(run_dir / "trials.parquet")
    status = dict(zip(rows["trial_key"], rows["status"]))
    assert status[blocked] == "failed" and list(status.values()).count("ok") == 1


@pytest.mark.heavy
def test_a_cluster_that_wants_a_token_is_an_error_within_seconds(tmp_path):
    """A Ray cluster started with token auth, joined without the token: exit 2 in seconds, not Ray's retries."""
    import shutil
    import socket
    import tempfile
    import time

    import psutil

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    (tmp_path / "head-home").mkdir()
    (tmp_path / "home").mkdir()
    head_env = dict(os.environ, HOME=str(tmp_path / "head-home"), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="t" * 32)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        f"--temp-dir={temp}", "--disable-usage-stats"], env=head_env, capture_output=True, timeout=180,
                       check=True)
        suite = tmp_path / "suite.yaml"
        suite.write_text(json.dumps({"name": "locked", "trial": tiny_trial()}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env["HOME"] = str(tmp_path / "home")
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(tmp_path / "out"),
                               "--address", f"127.0.0.1:{port}"], capture_output=True, text=True, env=env, timeout=300)
        elapsed = time.monotonic() - start
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"the Ray cluster at 127.0.0.1:{port} wants an auth token that this machine does not have" in proc.stderr
        assert "fix: give this machine the cluster's token" in proc.stderr
        assert elapsed < 60, f"took {elapsed:.0f} s"
        assert not (tmp_path / "out").exists()
    finally:  # end exactly the processes of this cluster (found by its temp folder)
        mine = [p for p in psutil.process_iter(["cmdline"]) if any(str(temp) in a for a in p.info["cmdline"] or [])]
        raylets = [p.pid for p in mine if "raylet" in " ".join(p.info["cmdline"] or [])]
        mine += [c for p in mine for c in _children(p)]
        mine += [p for p in psutil.process_iter() if _env(p).get("RAY_RAYLET_PID") in {str(r) for r in raylets}]
        for p in mine:
            try:
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def _children(proc):
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _env(proc) -> dict:
    import psutil

    try:
        return proc.environ()
    except psutil.Error:
        return {}


def test_reaping_ends_only_the_processes_of_a_session_whose_driver_died(tmp_path):
    """Fabricated sessions: one whose driver is dead (its 'worker' must end), one whose driver lives."""
    import time

    import psutil

    from bench.running.ray_sessions import RECORD, reap_orphans

    def sleeper(tag: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", tag])

    dead_driver = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_started = psutil.Process(dead_driver.pid).create_time()
    dead_driver.wait()
    sessions = {"session_dead": (dead_driver.pid, dead_started), "session_alive": (os.getpid(), psutil.Process().create_time())}
    workers = {}
    for name, (pid, started) in sessions.items():
        folder = tmp_path / name
        folder.mkdir()
        workers[name] = sleeper(f"--raylet-name={folder}/sockets/raylet")
        (folder / RECORD).write_text(json.dumps({"driver_pid": pid, "driver_started": started, "raylet_pid": None,
                                                 "session_dir": str(folder), "pids": {}}))
    bystander = sleeper("--not-ray")
    try:
        time.sleep(0.5)
        assert reap_orphans(tmp_path) == 1
        assert workers["session_dead"].wait(timeout=10) is not None
        assert workers["session_alive"].poll() is None and bystander.poll() is None
        assert not (tmp_path / "session_dead" / RECORD).exists() and (tmp_path / "session_alive" / RECORD).exists()
    finally:
        for proc in (*workers.values(), bystander):
            proc.kill()
            proc.wait()


def test_ctrl_c_during_a_trial_leaves_it_for_resume_and_no_ray_process(tmp_path):
    """SIGINT to the `bench run` process group (what Ctrl-C in a terminal sends) while a trial trains:
    Tune stops the trial, no row is written, the summary says it was interrupted and left for
    --resume (not failed), the exit code is 130, and the run's Ray processes are gone."""
    import time

    from bench.running.ray_sessions import orphans
    from test_runner import _session_record

    long_trial = tiny_trial(encoders={"text": tiny_trial()["encoders"]["text"]}, selection="last",
                            stages=[{"objectives": ["cross_entropy"], "epochs": 5000, "batch_size": 4}])
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "interrupted", "trial": long_trial}))
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(tmp_path / "results"),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    def trial_folders():  # Tune makes a trial's folder when the trial starts
        return [p for p in tmp_path.glob("results/interrupted/*/tune/*/*") if p.is_dir()]

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not trial_folders():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    assert trial_folders(), "the trial never started"
    record = _session_record(proc.pid)
    time.sleep(3)  # inside the trial's training
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "(0 ok, 0 failed, 1 interrupted (no row: `bench run --resume` runs them)" in out, out + err[-3000:]
    run = next((tmp_path / "results" / "interrupted").iterdir())
    assert not list((run / "rows").glob("*.parquet")) if (run / "rows").exists() else True
    for _ in range(20):  # Ray's processes end with the driver; give them a moment
        if not orphans(record):
            break
        time.sleep(0.5)
    assert orphans(record) == [], "Ray processes of the interrupted run are still running"


def test_a_hook_that_edits_its_row_changes_neither_the_stored_row_nor_the_progress_line(tmp_path):
    """bench_trial_finished gets a read-only copy: a hook that marks a failed trial ok (and its label
    with an ANSI escape) raises, which is recorded; the row on disk and the line shown stay the truth."""
    import io
    from types import SimpleNamespace

    from bench import hookimpl
    from bench.config.schema import TrialSpec
    from bench.api.plugins import _lifecycle_manager
    from bench.reporting.leaderboard import LeaderboardSpec
    from bench.reporting.progress import RunProgress
    from bench.running.runner import _make_callback
    from bench.running.transport import PAYLOAD, pack
    from bench.trial.run import base_row

    class Editor:
        @hookimpl
        def bench_trial_finished(self, result):
            result["status"], result["macro_f1"] = "ok", 1.0  # what the hook sees must not be the row itself
            result["fusion"] = "\x1b[32mgreen"

    spec = TrialSpec("k0", {"fusion": "late\x1b[31m"}, {}, {"seed": 0})
    run = RunDir(tmp_path / "run")
    stream = io.StringIO()
    progress = RunProgress("s", 1, quiet=True, stream=stream)
    callback = _make_callback(run, {"k0": spec}, progress, LeaderboardSpec(group_by=["fusion"]), {})
    trial = SimpleNamespace(config={"trial_key": "k0"}, local_path=None)
    pm = _lifecycle_manager()
    editor = Editor()
    pm.register(editor)
    try:
        callback.on_trial_result(0, [], trial, {PAYLOAD: pack(base_row(spec, "failed", "boom \x1b[2J"), None, None)})
        callback.on_trial_complete(0, [], trial)
    finally:
        pm.unregister(editor)
    stored = pl.read_parquet(run.rows_dir / "k0.parquet").row(0, named=True)
    assert stored["status"] == "failed" and "macro_f1" not in stored and stored["fusion"] == "late\x1b[31m"
    shown = stream.getvalue()
    assert "failed" in shown and "macro_f1" not in shown and "ok " not in shown, shown
    assert "\x1b" not in shown and "late\\x1b[31m" in shown and "boom \\x1b[2J" in shown, shown
    errors = json.loads((run.path / "run.json").read_text())["hook_errors"]
    assert errors[0]["hook"] == "bench_trial_finished" and "does not support item assignment" in errors[0]["error"]
