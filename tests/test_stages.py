"""Two-stage trials for real: self-supervised adaptation on the ssl split, then fine-tuning on train.

A probe objective (weight 0) snapshots the text encoder when its stage is built, i.e. the
weights that stage starts from, and keeps a handle on the encoder for the final weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from bench.api.interfaces import LossOutput, Objective
from bench.reporting.leaderboard import render_markdown, spec_from_suite
from bench.api.registry import PluginSpec, Registry
from bench.config.matrix import trial_key
from bench.config.schema import TrialConfig, TrialSpec
from bench.config.suite import load_suite
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import TINY_DATA, tiny_trial

DATA = {**TINY_DATA, "options": {**TINY_DATA["options"], "n_products": 120}}


class WeightProbe(Objective):
    """Records the text encoder's weights at the start of its stage; adds nothing to the loss."""

    def __init__(self, encoder, log: list):
        super().__init__()
        self.start = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        log.append((self.start, encoder))  # kept outside the module: the optimizer must not see it twice

    def loss(self, model, batch) -> LossOutput:
        return LossOutput(torch.zeros((), device=batch.labels.device))


@pytest.fixture
def probed(registry):
    """A registry with every real plugin plus the probe; returns (registry, log of (start, encoder))."""
    log: list = []
    reg = Registry()
    for spec in registry.all():
        reg.add(spec)
    reg.add(PluginSpec("objective", "weight_probe", "test probe", lambda opts, ctx: WeightProbe(ctx.encoders["text"], log)))
    return reg, log


def stage(name, data, objective, lr=1e-3, **extra):
    return {"name": name, "data": data, "epochs": 1, "batch_size": 16, "optimizer": {"name": "adamw", "lr": lr},
            "objectives": [objective, {"name": "weight_probe", "weight": 0.0}], **extra}


ADAPT = stage("adapt", "ssl", "simcse")
FINETUNE = stage("finetune", "train", "cross_entropy")


def run(reg, stages, **overrides):
    config = TrialConfig.model_validate(tiny_trial(dataset=DATA, stages=stages, **overrides)).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=reg)).row
    assert row["status"] == "ok", row["error"] + row.get("traceback", "")
    return row


def differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def same(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_stage_two_fine_tunes_the_encoder_stage_one_adapted(probed):
    reg, log = probed
    row = run(reg, [ADAPT, FINETUNE])
    (init, encoder), (after_adapt, encoder_2) = log
    assert encoder_2 is encoder  # one model: weights flow between stages in memory
    assert differ(init, after_adapt)  # simcse moved the text encoder
    final = encoder.state_dict()
    assert differ(after_adapt, final)  # and cross-entropy moved it on from there
    assert {"loss_adapt", "loss_finetune", "accuracy", "head_macro_f1", "tail_macro_f1"} <= set(row)

    # the same trial cut after stage 1 ends exactly where stage 2 of the full trial started
    log.clear()
    run(reg, [ADAPT])
    (init_only, encoder_only), = log
    assert same(init_only, init)
    assert same(encoder_only.state_dict(), after_adapt)


def test_ssl_split_sizes_and_finetune_fraction(probed):
    reg, _ = probed
    full = run(reg, [ADAPT, FINETUNE])
    total = full["n_ssl"] + full["n_train"] + full["n_dev"] + full["n_test"]
    shares = {k: full[f"n_{k}"] / total for k in ("ssl", "train", "dev", "test")}
    assert full["n_ssl"] > 0
    assert shares == pytest.approx({"ssl": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1}, abs=0.04)

    quarter = run(reg, [stage("adapt", "ssl", {"name": "convirt", "options": {"projection_dim": 32}}), FINETUNE],
                  finetune_fraction=0.25)
    assert quarter["n_train"] == pytest.approx(full["n_train"] / 4, rel=0.25)
    # the fraction cuts the labeled train split only: the ssl, dev and test items are the same
    assert (quarter["n_ssl"], quarter["n_dev"], quarter["n_test"]) == (full["n_ssl"], full["n_dev"], full["n_test"])
    assert "loss_adapt" in quarter and quarter["loss_adapt"] > 0


def test_without_ssl_stages_there_is_no_ssl_split(probed):
    reg, _ = probed
    row = run(reg, [FINETUNE])
    assert row["n_ssl"] == 0
    assert row["n_train"] / (row["n_train"] + row["n_dev"] + row["n_test"]) == pytest.approx(0.7, abs=0.05)


SUITES = Path(__file__).resolve().parents[1] / "suites"


def test_ssl_adaptation_suite_expands_to_the_paper_grid(registry):
    loaded = load_suite(SUITES / "ssl_adaptation.yaml", registry)
    assert len(loaded.trials) == 36
    by_method: dict[str, list] = {}
    for t in loaded.trials:
        by_method.setdefault(t.axes["method"], []).append(t.config)
    assert {m: len(c) for m, c in by_method.items()} == {"origin": 12, "simcse": 12, "convirt": 12}
    fractions = sorted({c["finetune_fraction"] for c in by_method["origin"]})
    assert fractions == [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]
    # one split for every method (origin leaves the ssl half unused), paper optimizer settings
    assert len({json.dumps(t.config["splits"], sort_keys=True) for t in loaded.trials}) == 1
    assert [s["data"] for s in by_method["origin"][0]["stages"]] == ["train"]
    for method in ("simcse", "convirt"):
        adapt, finetune = by_method[method][0]["stages"]
        assert adapt["data"] == "ssl" and adapt["objectives"][0]["name"] == method
        assert (adapt["optimizer"]["name"], adapt["optimizer"]["lr"], adapt["optimizer"]["weight_decay"]) == ("adamw", 1e-5, 1e-8)
        assert (finetune["optimizer"]["name"], finetune["optimizer"]["lr"], finetune["batch_size"]) == ("adam", 5e-5, 32)
    assert loaded.suite.reference["convirt / 0.05"]["accuracy_electronics"] == 0.483


def test_pivot_leaderboard_shows_head_and_tail_tables(registry):
    loaded = load_suite(SUITES / "ci" / "ssl_small.yaml", registry)
    spec = spec_from_suite(loaded.suite)
    rows = pl.DataFrame({"trial_key": ["a", "b", "c", "d"], "method": ["origin", "origin", "convirt", "convirt"],
                         "finetune_fraction": [0.5, 0.5, 0.5, 0.5], "seed": [0, 1, 0, 1], "status": ["ok"] * 4,
                         "accuracy": [0.5, 0.7, 0.8, 0.8], "head_macro_f1": [0.4, 0.6, 0.9, 0.7],
                         "tail_macro_f1": [0.1, 0.1, 0.3, 0.5]})
    text = render_markdown(rows, spec)
    for value in ("accuracy", "head_macro_f1", "tail_macro_f1"):
        assert f"## {value} by method and finetune_fraction" in text
    assert "0.600 ± 0.141" in text  # origin accuracy over two seeds
    assert "0.400 ± 0.141" in text  # convirt tail macro-F1


def test_ci_suite_two_stage_trial_runs(registry):
    loaded = load_suite(SUITES / "ci" / "ssl_small.yaml", registry)
    spec = next(t for t in loaded.trials if t.axes["method"] == "convirt")
    row = run_trial(spec, TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert row["n_ssl"] > 0 and row["loss_adapt"] > 0 and row["loss_finetune"] > 0
