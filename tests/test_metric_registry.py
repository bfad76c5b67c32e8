"""The metric registry: one declaration per metric, resolved at any k, read by every consumer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from bench.errors import BenchError
from bench.metrics import registry
from bench.metrics.classification import macro_f1, macro_f1_rows

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_patterns_resolve_at_any_k():
    ndcg5 = registry.lookup("ndcg@5")
    assert (ndcg5.pattern, ndcg5.name, ndcg5.k, ndcg5.aggregation, ndcg5.direction) == \
        ("ndcg@{k}", "ndcg@5", 5, "query", "higher")
    assert registry.lookup("map@5").pattern == "map@{k}" and registry.lookup("p@5").pattern == "p@{k}"
    assert registry.lookup("recall@1").k is None and registry.lookup("recall@5") is None
    assert registry.lookup("ndcg@0") is None and registry.lookup("ndcg@") is None
    assert registry.quality_metrics(5)[5:11] == ["ndcg@5", "mar@5", "p@5", "map@5", "mrr@5", "recall@1"]
    assert "ndcg@5" in registry.interval_metrics(5) and "ndcg@10" not in registry.interval_metrics(5)


def test_dev_names_are_the_metric_on_dev_and_never_default_columns():
    dev = registry.lookup("dev_ndcg@5")
    assert dev.split == "dev" and dev.k == 5 and dev.higher_is_better and not dev.bootstrap
    assert registry.lookup("dev_pair_f1").definition.startswith("best F1 over the dev pairs")
    assert registry.quality_columns(["dev_macro_f1", "macro_f1_std", "macro_f1", "ndcg@5", "accuracy"]) == \
        ["accuracy", "macro_f1", "ndcg@5"]


def test_directions_and_bootstrap_flags():
    assert registry.lower_is_better("wall_s") and registry.higher_is_better("train_samples_per_s")
    assert registry.higher_is_better("pair_ap") and not registry.lower_is_better("an_unknown_column")
    assert registry.bootstrappable("pair_ap") and not registry.bootstrappable("head_macro_f1")
    assert registry.lookup("f1_threshold").direction == "none" and registry.lookup("pair_note").dtype == "str"


def test_unknown_metric_names_the_closest():
    with pytest.raises(BenchError, match="ndcg@"):
        registry.require("ncdg@10")


def test_docs_carry_the_registry_table():
    text = DOCS.read_text()
    assert registry.docs_table() in text, "regenerate the table in docs/metrics.md from registry.docs_table()"


def test_macro_f1_is_sklearn_macro_f1_over_present_labels():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 7, (20, 60)), rng.integers(0, 9, (20, 60))
    ours = macro_f1_rows(true, pred, 9)
    for row, value in zip(range(20), ours):
        labels = sorted(set(true[row].tolist()))
        assert value == pytest.approx(f1_score(true[row], pred[row], labels=labels, average="macro", zero_division=0),
                                      abs=1e-12)
    assert macro_f1(true[0], pred[0]) == pytest.approx(ours[0], abs=1e-15)
    subset = [1, 3, 8]
    assert macro_f1(true[0], pred[0], subset) == pytest.approx(
        f1_score(true[0], pred[0], labels=[l for l in subset if l in set(true[0].tolist())], average="macro",
                 zero_division=0), abs=1e-12)


def test_leaderboard_and_compare_show_metrics_at_k5(tmp_path):
    from bench.reporting.compare import compare_tables
    from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table

    rows = pl.DataFrame({"trial_key": ["a0", "b0"], "status": ["ok", "ok"], "method": ["a", "b"], "seed": [0, 0],
                         "ndcg@5": [0.4, 0.6], "map@5": [0.3, 0.5], "mrr@5": [0.5, 0.7], "wall_s": [1.0, 2.0]})
    table = leaderboard_table(rows, LeaderboardSpec(group_by=["method"]))
    assert {"ndcg@5", "map@5", "mrr@5"} <= set(table.columns) and table["method"].to_list() == ["b", "a"]
    delta = compare_tables(rows, rows.with_columns(pl.col("ndcg@5") + 0.1), ["method"], ["ndcg@5"])
    assert delta["ndcg@5_delta"].to_list() == pytest.approx([0.1, 0.1])


def test_an_axis_named_like_any_declared_metric_is_refused():
    from bench.config.validation import column_problem

    assert column_problem("p@5") and column_problem("mrr@3") and column_problem("pair_ap")
    assert column_problem("fusion") is None
