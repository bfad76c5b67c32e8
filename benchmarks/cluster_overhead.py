"""The cluster path's overhead: the same 8-trial suite on one local Ray node and on a local
two-node cluster (`ray start --head` + `ray start --address`), in one run, printed as JSON.

    python benchmarks/cluster_overhead.py

Both set-ups have 2 CPUs in all (one node with 2, or two nodes with 1 each) on this one machine,
so the ratio two_nodes / one_node measures what the cluster path costs (a second raylet, results
travelling through Ray, the per-node plugin check), not a speed-up: more machines are needed for that.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import tiny_trial  # noqa: E402  (the tests' tiny encoders: start-up and overhead dominate)

from bench.running.local_cluster import local_cluster  # noqa: E402


def suite(folder: Path) -> Path:
    trial = tiny_trial(dataset={"name": "synthetic_catalog", "options": {"n_products": 200, "image_size": 32}},
                       stages=[{"objectives": ["cross_entropy"], "epochs": 3, "batch_size": 16,
                                "optimizer": {"lr": 1e-3}}])
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "overhead", "trial": trial, "max_concurrent": 2,
                                    "matrix": {"fusion": ["text_only", "shallow"], "seed": [0, 1, 2, 3]}}))
    return path


def timed_run(path: Path, out: Path, env: dict, address: str | None) -> float:
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out), "--quiet"]
    cmd += ["--address", address] if address else ["--max-concurrent", "2"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=path.parent)
    if proc.returncode != 0:
        raise SystemExit(f"bench run failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = suite(tmp)
        env = dict(os.environ, MIC_BENCH_CACHE=str(tmp / "cache"))
        timed_run(path, tmp / "warm", env, None)  # fills the cache: both measured runs start equally warm
        one = timed_run(path, tmp / "one", env, None)
        with local_cluster(tmp / "nodes") as (address, cluster_env):
            two = timed_run(path, tmp / "two", {**cluster_env, "MIC_BENCH_CACHE": str(tmp / "cache")}, address)
    print(json.dumps({"cluster_overhead": {"one_node_s": round(one, 1), "two_nodes_s": round(two, 1),
                                           "ratio_two_over_one": round(two / one, 3), "trials": 8,
                                           "note": "one machine: the ratio is overhead, not speed-up"},
                      "load_1min": {"start": load_start, "end": os.getloadavg()[0]}}, indent=2))


if __name__ == "__main__":
    main()
