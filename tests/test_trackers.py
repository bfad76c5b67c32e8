"""Trackers: chosen by the suite or --tracker, checked before a run, fed for real by Ray Tune."""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import polars as pl
import pytest

from bench.errors import BenchError
from bench.running.runner import run_suite
from bench.config.schema import TrackerRef
from bench.config.suite import load_suite
from bench.reporting.trackers import TRACKER_NAMES, TRACKERS, resolve_trackers
from conftest import invoke_bench, tiny_trial


def test_every_tracker_name_the_suite_accepts_has_an_implementation():
    assert list(TRACKERS) == TRACKER_NAMES


def test_unknown_tracker_in_a_suite_names_the_field_and_the_choices(write_suite, registry):
    suite = write_suite({"name": "t", "trial": tiny_trial(), "trackers": ["tensorboard", "neptune"]})
    with pytest.raises(BenchError) as exc:
        load_suite(suite, registry)
    text = exc.value.render()
    assert "trackers[1].name" in text and "'tensorboard', 'mlflow' or 'wandb'" in text and str(suite) in text


def test_bad_tracker_options_name_the_field():
    with pytest.raises(BenchError) as exc:
        resolve_trackers([TrackerRef(name="tensorboard"), TrackerRef(name="mlflow", options={"uri": "x"})],
                         file="suite.yaml")
    assert exc.value.field == "trackers[1].options" and "unknown field" in exc.value.message
    assert "tracking_uri" in exc.value.message  # the allowed options are listed


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_missing_tracker_package_fails_before_the_run_starts(write_suite, registry, tmp_path):
    with pytest.raises(BenchError) as exc:
        resolve_trackers([], cli_names=("wandb",))
    assert exc.value.field == "--tracker" and exc.value.fix == "pip install wandb"
    suite = write_suite({"name": "needs_wandb", "trial": tiny_trial(), "trackers": ["wandb"]})
    with pytest.raises(BenchError) as exc:
        run_suite(load_suite(suite, registry), registry, out=tmp_path / "out", quiet=True)
    assert exc.value.field == "trackers[0]" and exc.value.file == str(suite) and "wandb package" in exc.value.message
    assert not (tmp_path / "out" / "needs_wandb").exists()  # checked before a run folder is made


def _tensorboard_scalars(folder: Path) -> dict[str, float]:
    """Last value of every scalar in the TensorBoard event files under ``folder`` (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for f in folder.rglob("events.out.tfevents.*"):
        data, pos = f.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out[v.tag] = v.simple_value
    return out


def test_a_real_run_feeds_tensorboard_and_mlflow_and_leaves_reports(write_suite, tmp_path, monkeypatch, ray_session):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    suite = write_suite({"name": "tracked", "trial": tiny_trial(), "matrix": {"fusion": ["text_only"]},
                         "trackers": [{"name": "mlflow", "options": {"experiment_name": "tracked-exp"}}]})
    proc = invoke_bench("run", suite, "--out", tmp_path, "--tracker", "tensorboard", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "tracked").iterdir()
    row = pl.read_parquet(run / "trials.parquet").row(0, named=True)
    assert row["status"] == "ok"

    scalars = _tensorboard_scalars(run / "tune")
    assert scalars["ray/tune/accuracy"] == pytest.approx(row["accuracy"], abs=1e-6)
    assert scalars["ray/tune/macro_f1"] == pytest.approx(row["macro_f1"], abs=1e-6)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked-exp")
    assert experiment is not None and experiment.artifact_location.startswith(run.resolve().as_uri())
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.metrics["accuracy"] == pytest.approx(row["accuracy"])
    if row.get("ndcg@10") is not None:  # MLflow refuses '@' in names
        assert logged.data.metrics["ndcg_at_10"] == pytest.approx(row["ndcg@10"])
    assert logged.data.params["fusion"] == "text_only" and logged.data.params["trial_key"] == row["trial_key"]
    assert logged.info.status == "FINISHED"
    assert "macro_f1" in logged.data.tags["metrics.higher_is_better"].split(", ")  # from the metric registry
    assert "wall_s" in logged.data.tags["metrics.lower_is_better"].split(", ")

    # the end of every run: leaderboard.md, leaderboard.html and the plots beside them
    assert (run / "leaderboard.md").read_text().startswith("# tracked leaderboard")
    assert "data:image/png;base64," in (run / "leaderboard.html").read_text()
    assert sorted(p.name for p in (run / "plots").glob("*.png"))
    # the trial's own output went to files in its folder, not the terminal
    assert list((run / "tune").rglob("stderr"))
