"""Model selection on dev: the best evaluation's weights are the ones tested, early stopping,
learning curves, and leaderboards that choose a search's configuration on dev, never on test."""
from __future__ import annotations

import math

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.api.interfaces import LossOutput, Objective
from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table, render_markdown
from bench.api.registry import PluginSpec, Registry
from bench.trial.selection import Selector
from bench.config.matrix import trial_key
from bench.config.schema import TrialConfig, TrialSpec
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import TINY_DATA, tiny_trial

DATA = {**TINY_DATA, "options": {**TINY_DATA["options"], "n_products": 120}}
TURN = {"after_steps": 0}  # set by the test from the measured batches per epoch


def test_selector_keeps_the_best_weights_and_stops_when_patience_is_used_up():
    module = nn.Linear(2, 1)
    selector = Selector("dev_m", "max", patience=2, modules=[module])
    snapshots, stops = [], []
    for epoch, value in enumerate([0.2, 0.6, 0.5, 0.4], start=1):
        with torch.no_grad():
            module.weight.add_(1.0)
        snapshots.append(module.weight.detach().clone())
        stops.append(selector.update(epoch, {"dev_m": value}))
    assert stops == [False, False, False, True]
    assert selector.best_epoch == 2 and selector.best_value == 0.6
    assert selector.restore() and torch.equal(module.weight, snapshots[1])


def test_selector_ignores_nan_and_honours_min_delta_and_mode():
    selector = Selector("dev_loss", "min", patience=None, min_delta=0.1, modules=[nn.Linear(1, 1)])
    for epoch, value in enumerate([float("nan"), 1.0, 0.95, 0.5, float("nan")], start=1):
        assert selector.update(epoch, {"dev_loss": value}) is False  # patience None: never stops
    assert selector.best_epoch == 4 and selector.best_value == 0.5  # 0.95 is within min_delta of 1.0
    empty = Selector("dev_m", modules=[nn.Linear(1, 1)])
    empty.update(1, {"dev_m": float("nan")})
    assert empty.best_epoch is None and empty.restore() is False


class TurnsAgainstLabels(Objective):
    """Cross-entropy on the true labels for the first ``good_steps`` steps, then on shifted labels:
    a model that really gets worse on dev after that point."""

    needs = frozenset({"labels"})

    def __init__(self, good_steps: int, n_labels: int):
        super().__init__()
        self.good_steps, self.n_labels, self.steps = good_steps, n_labels, 0

    def loss(self, model, batch) -> LossOutput:
        out = model(batch)
        labels = batch.labels if self.steps < self.good_steps else (batch.labels + 1) % self.n_labels
        self.steps += 1
        known = batch.labels >= 0
        return LossOutput(F.cross_entropy(out.logits[known], labels[known]))


@pytest.fixture
def turning_registry(registry):
    reg = Registry()
    for spec in registry.all():
        reg.add(spec)
    reg.add(PluginSpec("objective", "turns_against_labels", "test objective",
                       lambda opts, ctx: TurnsAgainstLabels(TURN["after_steps"], ctx.task.num_labels)))
    return reg


def _run(reg, **overrides):
    config = TrialConfig.model_validate(tiny_trial(dataset=DATA, **overrides)).model_dump(mode="json")
    outcome = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=reg))
    assert outcome.row["status"] == "ok", outcome.row["error"] + outcome.row.get("traceback", "")
    return outcome


def test_the_dev_best_epoch_is_the_one_tested(turning_registry):
    """Trained on true labels for two epochs, then against them: the row is evaluated at epoch <= 2."""
    stage = {"objectives": ["turns_against_labels"], "epochs": 5, "batch_size": 16,
             "optimizer": {"lr": 3e-3, "head_lr": 3e-2}, "grad_clip": None}
    steps_per_epoch = _run(turning_registry, stages=[{**stage, "epochs": 1}]).curve["step"][0]
    TURN["after_steps"] = 2 * steps_per_epoch
    kept = _run(turning_registry, stages=[stage], selection={"patience": None})
    last = _run(turning_registry, stages=[stage], selection="last")
    row, curve = kept.row, kept.curve
    assert row["selection_metric"] == "dev_macro_f1" and row["epochs_run"] == 5 and row["n_evaluations"] == 5
    dev_curve = curve["dev_macro_f1"].to_list()
    best = max(range(5), key=lambda i: (dev_curve[i], -i))
    assert row["best_epoch"] == curve["epoch"][best] <= 2
    assert dev_curve[-1] < dev_curve[best]  # it really got worse afterwards
    assert math.isclose(row["dev_macro_f1"], dev_curve[best], abs_tol=1e-9)  # the restored weights, re-evaluated
    assert last.row["best_epoch"] is None and math.isclose(last.row["dev_macro_f1"], dev_curve[-1], abs_tol=1e-9)
    assert row["accuracy"] > last.row["accuracy"]  # test sees the dev-best weights, not the last ones
    assert row["stopped_early"] is False and row["selection_s"] >= 0
    assert set(curve.columns) >= {"trial_key", "stage", "epoch", "step", "train_loss", "dev_accuracy", "evaluation"}


def test_early_stopping_ends_the_stage_and_says_so(turning_registry):
    stage = {"objectives": ["cross_entropy"], "epochs": 6, "batch_size": 16, "optimizer": {"lr": 1e-3}}
    outcome = _run(turning_registry, stages=[stage], selection={"patience": 1, "min_delta": 1.0})
    row = outcome.row
    assert row["stopped_early"] is True and row["n_evaluations"] == 2 and row["epochs_run"] == 2
    assert row["best_epoch"] == 1 and outcome.curve.height == 2


def test_epoch_mean_loss_and_logged_parts_are_recorded(turning_registry):
    stage = {"objectives": ["cross_entropy"], "epochs": 2, "batch_size": 16, "optimizer": {"lr": 1e-3}}
    outcome = _run(turning_registry, stages=[stage])
    row, curve = outcome.row, outcome.curve
    assert math.isclose(row["loss_train"], curve["train_loss"][-1], rel_tol=1e-4)
    assert math.isclose(row["train_train_ce"], curve["train_ce"][-1], rel_tol=1e-4)


def test_no_dev_split_keeps_the_last_epoch_with_a_note(turning_registry):
    stage = {"objectives": ["cross_entropy"], "epochs": 2, "batch_size": 16, "optimizer": {"lr": 1e-3}}
    row = _run(turning_registry, stages=[stage], splits={"fractions": {"train": 0.7, "test": 0.3}}).row
    assert row["best_epoch"] is None and "no dev split" in row["selection_note"]


def test_an_unmeasured_selection_metric_fails_the_trial_with_the_field(turning_registry):
    config = TrialConfig.model_validate(tiny_trial(dataset=DATA, selection={"metric": "dev_nonexistent"})).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=turning_registry)).row
    assert row["status"] == "failed" and "selection.metric" in row["error"] and "dev_macro_f1" in row["error"]


def _search_rows() -> pl.DataFrame:
    """Config lr=0.1 is best on dev, lr=0.01 is best on test: selecting on test would flip the choice."""
    rows = []
    for fusion in ("late", "shallow"):
        for lr, dev, test in ((0.1, 0.80, 0.60), (0.01, 0.70, 0.90)):
            for seed in (0, 1):
                rows.append({"trial_key": f"{fusion}{lr}{seed}", "fusion": fusion, "lr": lr, "seed": seed,
                             "status": "ok", "dev_macro_f1": dev + seed / 100, "macro_f1": test + seed / 100})
    rows.append({"trial_key": "stopped", "fusion": "late", "lr": 0.5, "seed": 0, "status": "stopped",
                 "dev_macro_f1": 0.99, "macro_f1": None})
    return pl.DataFrame(rows)


def test_search_leaderboard_chooses_the_configuration_on_dev_not_test():
    spec = LeaderboardSpec(group_by=["fusion"], sort="macro_f1", metrics=["macro_f1"], select=["lr"],
                           select_metric="dev_macro_f1")
    table = leaderboard_table(_search_rows(), spec)
    assert table["lr"].to_list() == [0.1, 0.1]  # the dev choice, although lr=0.01 is better on test
    assert table["macro_f1"].to_list() == pytest.approx([0.605, 0.605])
    assert table["selected_dev_macro_f1"].to_list() == pytest.approx([0.805, 0.805])
    text = render_markdown(_search_rows(), spec)
    assert "The test split plays no part in the choice" in text and "selected_dev_macro_f1" in text


def test_asha_stops_a_weak_trial_which_is_still_a_row(write_suite, tmp_path, registry, ray_session):
    """Real Ray Tune with its ASHA scheduler: one dev report per epoch; the hopeless configuration
    (a learning rate too small to learn) is stopped at the first rung and recorded as `stopped`."""
    from bench.running.runner import run_suite
    from bench.config.suite import load_suite
    trial = tiny_trial(dataset=DATA, stages=[{"objectives": ["cross_entropy"], "epochs": 3, "batch_size": 16,
                                              "optimizer": {"lr": 1e-3}}])
    suite = write_suite({"name": "asha", "trial": trial, "max_concurrent": 1, "search": {
        "space": {"stages.0.optimizer.lr": {"grid": [1e-2, 1e-9]}},
        "scheduler": {"name": "asha", "metric": "dev_macro_f1", "grace_period": 1, "reduction_factor": 2}}})
    summary = run_suite(load_suite(suite, registry), registry, out=tmp_path, quiet=True)
    assert summary.exit_code == 0 and (summary.ok, summary.stopped, summary.failed) == (1, 1, 0)
    run = next((tmp_path / "asha").iterdir())
    rows = pl.read_parquet(run / "trials.parquet").sort("stages.0.optimizer.lr")
    weak, good = rows.row(0, named=True), rows.row(1, named=True)
    assert good["status"] == "ok" and good["n_evaluations"] == 3 and good["accuracy"] is not None
    assert weak["status"] == "stopped" and weak["epochs_run"] == 1 and weak["stopped_early"] is True
    assert weak["dev_macro_f1"] < good["dev_macro_f1"] and weak.get("accuracy") is None
    assert "asha" in weak["selection_note"]
    for row, n in ((good, 3), (weak, 1)):  # the curve of each trial arrived, from the worker or the reports
        curve = pl.read_parquet(run / "curves" / f"{row['trial_key']}.parquet")
        assert curve.height == n and curve["dev_macro_f1"].null_count() == 0
    board = (run / "leaderboard.md").read_text()
    assert "selected_dev_macro_f1" in board and "| 0.01" in board
