"""Shared test fixtures: an isolated cache, the registry, tiny random-init encoder configs."""
from __future__ import annotations

import os

import pytest

# Every test run gets its own cache unless the caller set one (CI sets a warm one per run).
os.environ.setdefault("MIC_BENCH_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"mic-bench-test-cache-{os.getuid()}"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_TEXT = {"name": "hf_text", "options": {"model": "random", "max_length": 16}}
TINY_IMAGE = {"name": "timm_image", "options": {"model": "vit_tiny_patch16_224", "img_size": 32,
                                                "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64,
                                                                 "num_heads": 2}}}
TINY_DATA = {"name": "synthetic_catalog", "options": {"n_products": 60, "n_labels": 8, "image_size": 32}}


def tiny_trial(**overrides) -> dict:
    """A complete, fast trial config (dict form, as in a suite's `trial` section)."""
    trial = {
        "dataset": TINY_DATA,
        "encoders": {"text": TINY_TEXT, "image": TINY_IMAGE},
        "fusion": "text_only",
        "stages": [{"objectives": ["cross_entropy"], "epochs": 1, "batch_size": 16,
                    "optimizer": {"lr": 1e-3}}],
    }
    trial.update(overrides)
    return trial


@pytest.fixture(scope="session")
def registry():
    from bench.api.plugins import get_registry

    return get_registry()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every in-process test that runs a suite (`run_suite`): a start
    costs 5-15 s, a fresh `bench run` process adds its imports and exit on top. Started as `bench run`
    starts it; the variables it sets for its own processes are taken back out of this process's
    environment at once, so `bench` subprocesses of later tests start their own Ray as a user's would."""
    import ray

    from bench.running.runner import _init_ray

    if ray.is_initialized():
        yield
        return
    before = dict(os.environ)
    _init_ray(None)
    os.environ.clear()
    os.environ.update(before)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, ray_session):
    """`bench run suites/smoke.yaml --max-concurrent 1 > log.txt` in this process on the shared Ray
    session, its stdout a real file read as it grows: (exit code, the --out folder, the log's text,
    whether the first trial's start line was in the log before any end line). Its two trials run one
    after the other, so the log's order is known."""
    import sys
    import threading
    import time
    from pathlib import Path

    from bench.cli import cli

    work = tmp_path_factory.mktemp("smoke")
    log = work / "log.txt"
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            text = log.read_text()
            if "start  fusion=text_only seed=0" in text and "] ok " not in text:
                seen.append(True)
            time.sleep(0.1)

    suite = Path(__file__).resolve().parents[1] / "suites" / "smoke.yaml"
    watcher, stdout, code = threading.Thread(target=watch, daemon=True), sys.stdout, None
    with open(log, "w") as out:
        sys.stdout = out
        watcher.start()
        try:
            cli.main(["run", str(suite), "--out", str(work / "out"), "--max-concurrent", "1"], prog_name="bench",
                     obj={}, standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdout = stdout
            done.set()
            watcher.join()
    return code, work / "out", log.read_text(), bool(seen)


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite dict (or YAML text) to a file and return its path."""
    import yaml

    def _write(content, name="suite.yaml"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def outside_plugins(tmp_path_factory):
    """The example FiLM package and the test-only faulty package, pip-installed for the session into a
    temporary folder on sys.path and PYTHONPATH (never into the environment the tests run in)."""
    from plugin_packages import install, uninstall

    packages = install("mic-bench-film", "mic-bench-faulty", root=tmp_path_factory.mktemp("plugins"))
    yield packages
    uninstall(packages)


# Every way a trial can fail, beside a trial of the outside FiLM fusion, in one suite: a `bench run`
# start costs more than all of these trials together.
FAULTS_MATRIX = {
    "fine": {},
    "film": {"fusion": "film"},
    "raises": {"fusion": "explodes"},
    "dies": {"fusion": "dies"},
    "nan": {"stages": [{"objectives": ["nan_loss"], "epochs": 1}]},
    "bad_weights": {"encoders": {"image": {"options": {"pretrained": "/no/such/weights.safetensors"}}},
                    "fusion": "image_only"},
    "slow": {"fusion": {"name": "sleeps", "options": {"seconds": 0.5}}, "max_trial_minutes": 0.02},
}


@pytest.fixture(scope="session")
def faults_run(outside_plugins, tmp_path_factory):
    """`bench run` of FAULTS_MATRIX in a fresh process (a fresh entry-point scan finds the outside
    packages): (the finished process, its run folder)."""
    import yaml

    work = tmp_path_factory.mktemp("faults")
    suite = work / "faults.yaml"
    suite.write_text(yaml.safe_dump({"name": "faults", "trial": tiny_trial(), "matrix": {"method": FAULTS_MATRIX}}),
                     encoding="utf-8")
    proc = run_bench("run", suite, "--out", work / "results", "--quiet")
    runs = sorted((work / "results" / "faults").glob("*/trials.parquet"))
    assert runs, proc.stderr[-3000:]
    return proc, runs[-1].parent


def run_bench(*args, env=None, timeout=600):
    """Run the real `bench` command in a fresh process (fresh entry-point scan)."""
    import subprocess
    import sys

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def invoke_bench(*args):
    """The real `bench` command run in this process by click's test runner, for commands that start
    no Ray and need no fresh plugin scan (a new process costs 5-15 s of imports on a busy machine).
    Returns what ``run_bench`` returns; an unexpected exception is raised, not turned into an exit code."""
    import subprocess

    from click.testing import CliRunner

    from bench.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)
