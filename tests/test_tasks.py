"""The task plugin kind: built-in tasks registered like any plugin, the trial loop asking the task,
evaluate-only trials, and one place deciding what trains."""
from __future__ import annotations

import json

import polars as pl
import pytest

from bench.config.schema import TrialConfig, TrialSpec
from bench.errors import BenchError
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from bench.trial.session import open_trial

from conftest import TINY_DATA, TINY_TEXT, invoke_bench, tiny_trial

FROZEN_TEXT = {"name": "hf_text", "options": {**TINY_TEXT["options"], "freeze": "all"}}


def test_built_in_tasks_are_plugins_of_kind_task(registry):
    assert {"classification", "retrieval", "matching", "pairs"} <= set(registry.names("task"))
    listed = json.loads(invoke_bench("plugins", "--json").stdout)["plugins"]
    tasks = {p["name"]: p for p in listed if p["kind"] == "task"}
    assert {"classification", "retrieval", "pairs"} <= set(tasks)
    assert tasks["pairs"]["distribution"] == "mic-bench"


def test_evaluate_only_trial_scores_a_frozen_encoder_on_retrieval(registry, tmp_path):
    """`stages: []`: no dummy stage (cross-entropy would be refused on data without labels); the row
    says nothing trained and carries the retrieval metrics of the model as built."""
    cfg = tiny_trial(task="retrieval", encoders={"text": FROZEN_TEXT}, stages=[])
    row = run_trial(TrialSpec("frozen", {}, {}, cfg), TrialContext(registry=registry, cache_dir=str(tmp_path))).row
    assert row["status"] == "ok", row.get("error")
    assert 0 <= row["ndcg@10"] <= 1 and row["mar@10"] is not None and "accuracy" not in row
    assert row["train_s"] == 0 and row["train_samples_per_s"] is None and row["selection_metric"] is None
    assert "nothing trained" in row["selection_note"] and row["n_trainable_params"] == 0


def test_evaluate_only_rows_equal_the_model_as_built(registry, tmp_path):
    """The same frozen model scored by two evaluate-only trials of one seed: identical rows (nothing
    moved), and a trained trial of the same seed differs (the stage did train)."""
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    first = run_trial(TrialSpec("a", {}, {}, tiny_trial(stages=[], fusion="text_only")), ctx).row
    again = run_trial(TrialSpec("b", {}, {}, tiny_trial(stages=[], fusion="text_only")), ctx).row
    trained = run_trial(TrialSpec("c", {}, {}, tiny_trial(fusion="text_only")), ctx).row
    assert first["status"] == again["status"] == trained["status"] == "ok"
    assert first["accuracy"] == again["accuracy"] and first["macro_f1"] == again["macro_f1"]
    assert trained["train_s"] > 0 and first["train_s"] == 0


def test_linear_probe_with_a_trainable_encoder_it_does_not_read_runs(registry, tmp_path):
    """The optimizer and the selector read one list of what trains: an image encoder no output reads
    is not trained, so a probe over frozen text with nothing else to train is a no-op stage."""
    cfg = tiny_trial(encoders={"text": FROZEN_TEXT, "image": tiny_trial()["encoders"]["image"]},
                     fusion={"name": "linear_probe", "options": {"C": 1.0, "modalities": ["text"]}})
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    row = run_trial(TrialSpec("probe", {}, {}, cfg), ctx).row
    assert row["status"] == "ok", row.get("error")
    assert row["linear_probe_C"] == 1.0 and row["accuracy"] is not None
    run = open_trial(TrialConfig.model_validate(cfg), ctx)
    encoders, heads = run.trained_modules()
    assert encoders == [] and heads == [run.model.fusion]  # the image encoder is not among them


def test_trained_modules_follow_the_encoders_objectives_read(registry, tmp_path):
    """An objective that encodes a modality itself (image-text contrastive reads both) adds that
    encoder to what trains and what selection restores."""
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    run = open_trial(TrialConfig.model_validate(tiny_trial()), ctx)
    encoders, heads = run.trained_modules()
    assert encoders == [run.model.encoders["text"]] and heads == [run.model.fusion]
    encoders, _ = run.trained_modules({"image"})
    assert run.model.encoders["image"] in encoders


def test_unknown_task_is_refused_when_the_suite_loads(registry, write_suite):
    from bench.config.suite import load_suite

    suite = write_suite({"name": "t", "trial": tiny_trial(task="hierarchy")})
    with pytest.raises(BenchError) as caught:
        load_suite(suite, registry)
    assert caught.value.field == "trial.task.name" and "classification" in caught.value.fix


def test_task_without_options_keeps_the_trial_key_of_a_plain_name(registry, write_suite):
    """`task: retrieval` and `task: {name: retrieval}` are one trial (stored configs and keys of
    earlier runs stay valid)."""
    from bench.config.suite import load_suite

    plain = load_suite(write_suite({"name": "t", "trial": tiny_trial(task="matching", stages=[])}), registry)
    mapped = load_suite(write_suite({"name": "t", "trial": tiny_trial(task={"name": "matching"}, stages=[])}),
                        registry)
    assert plain.trials[0].key == mapped.trials[0].key and plain.trials[0].config["task"] == "matching"


def test_pair_trial_is_the_same_loop_asking_the_pairs_task(registry, tmp_path):
    from test_pairs import _pair_trial

    row = run_trial(TrialSpec("p", {}, {}, _pair_trial()), TrialContext(registry=registry,
                                                                       cache_dir=str(tmp_path))).row
    assert row["status"] == "ok", row.get("error")
    assert row["selection_metric"] == "dev_pair_ap" and row["pair_ap"] is not None
    assert "train_pairs_seen_share" in row and "train_items_seen_share" not in row


def test_suite_checks_of_pair_tasks_follow_the_task_kind_not_its_name(write_suite):
    """An outside task whose kind is pairs gets the pairs task's suite checks (here: item
    objectives are refused), whatever it is called."""
    from mic_bench_plugins.tasks.pairs import PairsTask

    from bench.config.suite import load_suite
    from bench.api.plugins import build_registry
    from bench.api.registry import PluginSpec
    from test_pairs import _pair_trial

    class RenamedPairs(PairsTask):
        pass

    fresh = build_registry()
    fresh.add(PluginSpec("task", "my_pairs", "pairs under another name", RenamedPairs))
    load_suite(write_suite({"name": "t", "trial": _pair_trial(task="my_pairs")}), fresh)
    with pytest.raises(BenchError) as caught:
        load_suite(write_suite({"name": "t", "trial": _pair_trial(task="my_pairs",
                                                                  stages=[{"objectives": ["cross_entropy"]}])}), fresh)
    assert "use a pair objective" in caught.value.fix
