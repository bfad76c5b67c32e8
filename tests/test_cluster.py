"""The cluster path: a real two-node Ray cluster on this machine, and the checks that make a
multi-node run read the same data and plugins everywhere."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from bench.running.cluster import absolute_paths, check_fingerprint, dataset_key
from bench.errors import BenchError
from conftest import tiny_trial


def test_relative_dataset_paths_become_absolute_against_the_driver(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "items.csv").write_text("item_id,title\n1,a\n")
    options = {"path": "data/items.csv", "images": "not/there", "n": 3, "uri": "s3://bucket/items.csv",
               "nested": {"split_file": "data/items.csv"}, "absolute": "/etc/hostname"}
    out = absolute_paths(options, tmp_path)
    assert out["path"] == str(tmp_path / "data" / "items.csv")
    assert out["nested"]["split_file"] == str(tmp_path / "data" / "items.csv")
    assert (out["images"], out["n"], out["uri"], out["absolute"]) == ("not/there", 3, "s3://bucket/items.csv",
                                                                      "/etc/hostname")


def test_a_node_with_different_data_fails_the_trial_naming_the_path():
    class Seen:
        fingerprint = "aaaa"

    check_fingerprint("aaaa", Seen(), {"path": "/data/items.csv"})  # the same data: nothing to say
    check_fingerprint(None, Seen(), {"path": "/data/items.csv"})  # the driver did not load it: no claim
    with pytest.raises(BenchError, match="this node sees different data at /data/items.csv"):
        check_fingerprint("bbbb", Seen(), {"path": "/data/items.csv"})
    assert dataset_key({"name": "x", "options": {"b": 1, "a": 2}}) == dataset_key({"options": {"a": 2, "b": 1},
                                                                                  "name": "x"})


@pytest.fixture
def two_node_cluster(tmp_path):
    """Two real Ray nodes, each from its own working directory; afterwards none of their processes is left."""
    from bench.running.local_cluster import local_cluster, node_processes

    with local_cluster(tmp_path / "nodes") as (address, env):
        yield address, env
    assert not node_processes(f"mbnode{address.rsplit(':', 1)[1]}")


def test_a_suite_runs_on_a_two_node_cluster_without_shared_run_folder(two_node_cluster, tmp_path):
    """Workers never write into the run folder: rows, predictions and curves travel through Ray; a
    relative dataset path is read from the driver's folder on both nodes; trials ran on both nodes."""
    address, env = two_node_cluster
    driver = tmp_path / "driver"
    (driver / "data").mkdir(parents=True)
    lines = ["item_id,title,label"] + [f"{i},{'red' if i % 2 else 'blue'} thing {i % 7},{'r' if i % 2 else 'b'}"
                                       for i in range(80)]
    (driver / "data" / "items.csv").write_text("\n".join(lines) + "\n")
    dataset = {"name": "table", "options": {"path": "data/items.csv", "columns": {"label": "label"}}}
    trial = tiny_trial(dataset=dataset, encoders={"text": tiny_trial()["encoders"]["text"]})
    import yaml

    suite = driver / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "two_nodes", "trial": trial, "matrix": {"seed": [0, 1, 2, 3]},
                                     "max_concurrent": 2}))
    tune_store = tmp_path / "tune_store"  # Tune's own state through a pyarrow filesystem URI
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "suite.yaml", "--address", address, "--out",
                           "results", "--tune-storage", tune_store.as_uri(), "--quiet"], cwd=driver, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = next((driver / "results" / "two_nodes").iterdir())
    rows = pl.read_parquet(run / "trials.parquet")
    assert rows.height == 4 and set(rows["status"]) == {"ok"}
    for key in rows["trial_key"]:
        assert (run / "predictions" / f"{key}.parquet").exists() and (run / "curves" / f"{key}.parquet").exists()
    assert rows["node_id"].n_unique() == 2  # both nodes ran trials
    assert set(rows["data_fingerprint"]) == {rows["data_fingerprint"][0]}
    import json

    meta = json.loads((run / "run.json").read_text())
    assert meta["datasets"][0]["options"]["path"] == str(driver / "data" / "items.csv")
    assert len(meta["nodes"]) == 2
    assert list(tune_store.glob("tune/experiment_state*.json")) and not (run / "tune").exists()
