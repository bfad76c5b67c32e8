"""Trackers: chosen by the suite or --tracker, checked before a run, fed for real by Ray Tune."""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.running.runner import run_suite
from bench.config.schema import TrackerRef
from bench.config.suite import load_suite
from bench.reporting.trackers import TRACKER_NAMES, TRACKERS, resolve_trackers
import yaml

from conftest import tiny_trial


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


def _tensorboard_runs(folder: Path) -> dict[str, dict]:
    """Each TensorBoard run folder read back through TensorBoard's own reader: last value of every
    scalar, every scalar series, the hparams of its session and how the session ended."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        hparams, status = {}, None
        for tag, content in events.PluginTagToContent("hparams").items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                for name, value in data.session_start_info.hparams.items():
                    hparams[name] = getattr(value, value.WhichOneof("kind"))
            if data.HasField("session_end_info"):
                status = data.session_end_info.status
        texts = {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]
                 if tag.endswith("text_summary")}
        out[run.name] = {"scalars": scalars, "hparams": hparams, "status": status, "texts": texts}
    return out


# One named axis: two trials that finish and one whose time budget (60 microseconds) is spent before
# its first training step, so it fails at run time with TrialTimeout on every machine.
SETTINGS = {"lr_0.001": {"stages": [{"optimizer": {"lr": 0.001}}]},
            "lr_0.003": {"stages": [{"optimizer": {"lr": 0.003}}]},
            "out_of_time": {"stages": [{"optimizer": {"lr": 0.01}}], "max_trial_minutes": 1.0e-6}}
TIMEOUT_TEXT = "ran past max_trial_minutes during stage 'train' (step 0)"


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, registry, ray_session):
    """One real run with both trackers: two trials that finish and one that fails (Ray Tune, real files)."""
    pytest.importorskip("tensorboardX")
    pytest.importorskip("mlflow")
    tmp = tmp_path_factory.mktemp("tracked")
    suite = tmp / "suite.yaml"

    suite.write_text(yaml.safe_dump({
        "name": "tracked", "trial": tiny_trial(stages=[{"objectives": ["cross_entropy"], "epochs": 2,
                                                        "batch_size": 16, "optimizer": {"lr": 1e-3}}]),
        "matrix": {"fusion": ["text_only"], "setting": SETTINGS},
        "trackers": [{"name": "mlflow", "options": {"experiment_name": "tracked-exp"}}]}))
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        summary = run_suite(load_suite(suite, registry), registry, out=tmp / "out", quiet=True,
                            trackers=("tensorboard",))
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return summary


def test_mlflow_runs_have_names_full_params_curves_config_and_failures(tracked_run):
    from mlflow import MlflowClient

    run = tracked_run.run_dir
    rows = {r["setting"]: r for r in tracked_run.rows.iter_rows(named=True)}
    assert [rows[label]["status"] for label in SETTINGS] == ["ok", "ok", "failed"]
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked-exp")
    assert experiment is not None and experiment.artifact_location.startswith(run.resolve().as_uri())

    (logged,) = client.search_runs([experiment.experiment_id],
                                   "params.lr = '0.003' and params.fusion = 'text_only'")
    row = rows["lr_0.003"]
    assert logged.info.run_name == "tracked fusion=text_only setting=lr_0.003 seed=0"
    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["trial_key"] == row["trial_key"] and params["epochs"] == "2.0" and params["batch_size"] == "16"
    assert params["stages.0.optimizer.lr"] == "0.003" and params["encoders.text.options.max_length"] == "16"
    assert params["setting"] == "lr_0.003"
    assert "eval.batch_size" in params and "selection.metric" in params  # defaults of the resolved config too
    assert logged.data.metrics["accuracy"] == pytest.approx(row["accuracy"])
    if row.get("ndcg@10") is not None:  # MLflow refuses '@' in names
        assert logged.data.metrics["ndcg_at_10"] == pytest.approx(row["ndcg@10"])
    assert logged.data.params["fusion"] == "text_only" and logged.data.params["trial_key"] == row["trial_key"]
    assert logged.info.status == "FINISHED"
    assert "macro_f1" in logged.data.tags["metrics.higher_is_better"].split(", ")  # from the metric registry
    assert "wall_s" in logged.data.tags["metrics.lower_is_better"].split(", ")
    curve = client.get_metric_history(logged.info.run_id, "dev_macro_f1")
    assert len(curve) == 2 and [m.step for m in curve] == [1, 2]  # one point per epoch
    config = yaml.safe_load((Path(client.download_artifacts(logged.info.run_id, "config.yaml", str(run)))).read_text())
    assert config["stages"][0]["optimizer"]["lr"] == 0.003 and config["fusion"] == {"name": "text_only",
                                                                                    "options": {}}

    (failed,) = client.search_runs([experiment.experiment_id], "params.lr = '0.01'")
    assert failed.info.run_name == "tracked fusion=text_only setting=out_of_time seed=0"
    assert failed.info.status == "FAILED" and failed.data.params["max_trial_minutes"] == "1e-06"
    assert failed.data.tags["error"] == rows["out_of_time"]["error"] and TIMEOUT_TEXT in failed.data.tags["error"]
    assert len(client.search_runs([experiment.experiment_id])) == 3


def test_tensorboard_runs_are_named_by_axes_and_carry_hparams_curves_and_status(tracked_run):
    pytest.importorskip("tensorboard", reason="TensorBoard's reader comes with the tensorboard package "
                                              "(pip install 'mic-bench[trackers]')")
    from tensorboard.plugins.hparams import api_pb2

    rows = {r["setting"]: r for r in tracked_run.rows.iter_rows(named=True)}
    runs = _tensorboard_runs(tracked_run.run_dir / "tensorboard")
    assert sorted(runs) == sorted(f"fusion=text_only_setting={label}_seed=0" for label in SETTINGS)
    ok = runs["fusion=text_only_setting=lr_0.001_seed=0"]
    row = rows["lr_0.001"]
    assert ok["hparams"]["lr"] == 0.001 and ok["hparams"]["fusion"] == "text_only"
    assert ok["hparams"]["trial_key"] == row["trial_key"] and ok["hparams"]["status"] == "ok"
    assert ok["status"] == api_pb2.STATUS_SUCCESS
    assert ok["scalars"]["final/accuracy"][-1][1] == pytest.approx(row["accuracy"], abs=1e-6)
    assert [step for step, _ in ok["scalars"]["epoch/dev_macro_f1"]] == [1, 2]
    assert "optimizer" in ok["texts"]["config/text_summary"]
    failed = runs["fusion=text_only_setting=out_of_time_seed=0"]
    assert failed["status"] == api_pb2.STATUS_FAILURE and failed["hparams"]["status"] == "failed"
    assert failed["hparams"]["lr"] == 0.01 and TIMEOUT_TEXT in failed["texts"]["error/text_summary"]
    assert (tracked_run.run_dir / "tensorboard" / "fusion=text_only_setting=lr_0.001_seed=0"
            / "config.yaml").exists()


def test_a_run_with_trackers_leaves_its_reports(tracked_run):
    run = tracked_run.run_dir
    assert (run / "leaderboard.md").read_text().startswith("# tracked leaderboard")
    assert "data:image/png;base64," in (run / "leaderboard.html").read_text()
    assert sorted(p.name for p in (run / "plots").glob("*.png"))
    # the trial's own output went to files in its folder, not the terminal
    assert list((run / "tune").rglob("stderr"))


def test_the_trackers_extra_installs_every_tracker_the_docs_name():
    import tomllib

    extra = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["trackers"]
    names = {re.split(r"[<>=!~\[ ]", req)[0].lower() for req in extra}
    assert {"mlflow", "tensorboardx", "tensorboard"} <= names  # tensorboard: the `tensorboard --logdir` viewer


def test_a_tracker_that_cannot_open_its_store_is_logged_once_and_the_run_goes_on(tmp_path, caplog):
    pytest.importorskip("mlflow")
    from types import SimpleNamespace

    from bench.reporting.trackers import TrackerContext

    (tmp_path / "a file").write_text("")  # a store inside a file: it cannot be made
    (tracker,) = resolve_trackers([TrackerRef(name="mlflow", options={
        "tracking_uri": f"sqlite:///{tmp_path / 'a file' / 'mlflow.db'}"})])
    callback = tracker.callback(TrackerContext(tmp_path, "s", {}))
    trial = SimpleNamespace(config={"trial_key": "k"}, local_path=None)
    with caplog.at_level("WARNING"):
        callback.setup()  # the store cannot be opened: no exception reaches Tune
        callback.log_trial_start(trial)
        callback.log_trial_result(1, trial, {"curve_point": True, "train_loss": 1.0, "training_iteration": 1})
        callback.log_trial_end(trial, failed=False)
    warnings = [r for r in caplog.records if "tracker MLflowTracker failed" in r.getMessage()]
    assert len(warnings) == 1 and "the run goes on without it" in warnings[0].getMessage()
