"""Leaderboard verdicts: family-wise controlled marks, pair-metric intervals, search suites ranked by dev."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from bench.metrics.pairs import average_precision, pair_scores_at, predicted_matches
from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table, render_html, render_markdown
from bench.reporting.significance import (_weighted_average_precision, group_significance, leaderboard_marks,
                                          pairwise_adjusted_p, trial_intervals)
from report_runs import N_LABELS, noisy_predictions, trial, write_run
from bench.reporting.results import load_run
from bench.reporting.write import load_predictions

ROOT = Path(__file__).resolve().parents[1]


def _draws(means: list[float], n_resamples: int = 2000, sd: float = 0.01, seed: int = 0) -> np.ndarray:
    """Independent normal draws around each mean (a stand-in for a bootstrap distribution)."""
    rng = np.random.default_rng(seed)
    return np.array(means)[:, None] + rng.normal(0, sd, (len(means), n_resamples))


def test_step_down_marks_only_the_rows_far_behind_and_adjusts_for_the_family():
    observed = np.array([0.80, 0.79, 0.70, 0.60])
    p = pairwise_adjusted_p(observed, _draws(list(observed)))
    assert p[0, 1] > 0.05 and p[0, 2] < 0.001 and p[0, 3] < 0.001 and p[1, 2] < 0.001
    assert np.allclose(p, p.T, equal_nan=True)
    _, marks = leaderboard_marks(observed, _draws(list(observed)))
    assert marks == ["best", "≈", "", ""]
    # one comparison alone at |t| ~ 2.1 (p ~ 0.035) is significant; among 45 pairs it is not
    two = pairwise_adjusted_p(np.array([0.030, 0.0]), _draws([0.0, 0.0]))[0, 1]
    many = pairwise_adjusted_p(np.r_[0.030, np.zeros(9)], _draws([0.0] * 10))[0, 1]
    assert two < 0.05 < many


def test_identical_rows_are_never_marked_and_a_constant_gap_always_is():
    observed = np.array([0.5, 0.5, 0.4])
    draws = np.repeat(observed[:, None], 100, axis=1)  # nothing varies: a difference is exact
    p, marks = leaderboard_marks(observed, draws)
    assert marks == ["best", "≈", ""] and p[1] == 1.0 and p[2] == 0.0


def test_lower_is_better_and_unlabelled_rankings():
    observed = np.array([0.2, 0.5])
    _, marks = leaderboard_marks(observed, _draws([0.2, 0.5]), higher_is_better=False)
    assert marks == ["best", ""]
    p, marks = leaderboard_marks(observed, _draws([0.2, 0.5]), label_best=False)
    assert marks == ["", "≈"] and p[1] == 1.0


def test_calibration_script_quick_run(monkeypatch):
    spec = importlib.util.spec_from_file_location("calibration", ROOT / "benchmarks" / "significance_calibration.py")
    calibration = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "calibration", calibration)  # (its dataclasses look their module up)
    spec.loader.exec_module(calibration)
    results = {r["scenario"]: r for r in calibration.main(["--quick", "--scenario", "equal", "--scenario", "gap"])}
    assert results["equal"]["leaderboards"] == 100
    assert results["equal"]["share"] <= 0.12  # 5% target; 100 leaderboards have a Monte Carlo s.e. of ~2%
    assert results["gap"]["share"] >= 0.8


def _seeded_run(tmp_path, seed_accuracies: dict[str, tuple[float, ...]], n: int = 300):
    true = np.random.default_rng(7).integers(0, N_LABELS, n)
    trials = [trial(f"{g}{s}", {"fusion": g}, s, true, noisy_predictions(true, acc, 100 * i + s))
              for i, (g, accs) in enumerate(seed_accuracies.items()) for s, acc in enumerate(accs)]
    return write_run(tmp_path / "run", trials)


def test_seed_spread_keeps_a_gap_made_by_one_lucky_seed_from_counting(tmp_path):
    """a's seeds score 0.85 and 0.55, b's 0.70 twice: on items alone a's mean (0.70) vs b's would be
    tested as if the seeds were the truth; with the seeds resampled, a is not ahead of b significantly,
    and a group far behind both is still marked."""
    run = _seeded_run(tmp_path, {"a": (0.85, 0.55), "b": (0.70, 0.70), "c": (0.30, 0.32)})
    _, rows = load_run(run)
    stats = group_significance(rows, load_predictions(run), ["fusion"], ["accuracy"], "accuracy", None)
    marks = dict(zip(stats["fusion"], stats["near_best"]))
    assert marks["c"] == "" and "" not in (marks["a"], marks["b"])
    width = dict(zip(stats["fusion"], stats["accuracy_ci_high"] - stats["accuracy_ci_low"]))
    assert width["a"] > 2 * width["b"]  # the seed spread widens a's interval


def _pair_rows_and_predictions(tmp_path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two pair-matching methods on the same 400 test pairs, two seeds each; rows from the real metrics."""
    rng = np.random.default_rng(3)
    labels = (rng.random(400) < 0.3).astype(int)
    rows, tables = [], []
    for method, signal in (("good", 2.0), ("weak", 0.4)):
        for seed in (0, 1):
            scores = np.float32(np.tanh(rng.normal(labels * signal, 1.0) / 3)).astype(float)
            key = f"{method}{seed}"
            threshold = 0.1
            found = pair_scores_at(scores, labels, threshold)
            rows.append({"trial_key": key, "method": method, "seed": seed, "status": "ok",
                         "pair_ap": average_precision(scores, labels), "pair_threshold": threshold,
                         **{f"pair_{k}": v for k, v in found.items()}})
            tables.append(pl.DataFrame({"trial_key": key, "left_id": [f"l{i}" for i in range(400)],
                                        "right_id": [f"r{i}" for i in range(400)], "label": labels,
                                        "score": scores, "predicted": predicted_matches(scores, threshold)},
                                       schema_overrides={"label": pl.Int8, "predicted": pl.Int8}))
    return pl.DataFrame(rows), pl.concat(tables)


def test_pair_metrics_get_intervals_and_marks_from_the_stored_pairs(tmp_path):
    rows, predictions = _pair_rows_and_predictions(tmp_path)
    ci = trial_intervals(rows, predictions)
    assert set(ci["metric"]) == {"pair_ap", "pair_f1", "pair_precision", "pair_recall"}
    by_row = {r["trial_key"]: r for r in rows.iter_rows(named=True)}
    for r in ci.iter_rows(named=True):
        assert r["value"] == pytest.approx(by_row[r["trial_key"]][r["metric"]], abs=1e-12)  # the row's own figure
        assert r["ci_low"] < r["value"] < r["ci_high"] and r["n_items"] == 400
    spec = LeaderboardSpec(group_by=["method"], sort="pair_ap")
    table = leaderboard_table(rows, spec, predictions)
    assert table["method"].to_list() == ["good", "weak"] and table["near_best"].to_list() == ["best", ""]
    text = render_markdown(rows, spec, predictions)
    assert "pair_ap 95% CI" in text and "pair_f1 95% CI" in text and "same test pairs" in text


def test_resampled_average_precision_is_sklearn_with_weights():
    rng = np.random.default_rng(1)
    scores, labels = np.round(rng.normal(size=80), 1), (rng.random(80) < 0.4).astype(int)
    weights = rng.integers(0, 3, (5, 80))
    got = _weighted_average_precision(scores, labels, weights)
    for w, value in zip(weights, got):
        assert value == pytest.approx(average_precision_score(labels, scores, sample_weight=w), abs=1e-12)


def _search_run(tmp_path) -> Path:
    """A search-only suite: three sampled learning rates, two seeds each; dev and test disagree on the best."""
    true = np.random.default_rng(5).integers(0, N_LABELS, 300)
    trials = []
    for i, (lr, dev, acc) in enumerate(((0.1, 0.32, 0.55), (0.01, 0.25, 0.80), (0.001, 0.18, 0.40))):
        for s in (0, 1):
            trials.append(trial(f"lr{lr}s{s}", {"stages.0.optimizer.lr": lr}, s, true,
                                noisy_predictions(true, acc, 10 * i + s), dev_macro_f1=dev + s / 100))
    return write_run(tmp_path / "run", trials)


def test_search_only_leaderboard_ranks_by_dev_with_the_chosen_configuration_first(tmp_path):
    run = _search_run(tmp_path)
    _, rows = load_run(run)
    spec = LeaderboardSpec(group_by=[], sort="macro_f1", select=["stages.0.optimizer.lr"], select_metric="dev_macro_f1")
    table = leaderboard_table(rows, spec, load_predictions(run))
    assert table["stages.0.optimizer.lr"].to_list() == [0.1, 0.01, 0.001]  # by dev, although 0.01 is best on test
    assert table["rank"].to_list() == [1, 2, 3] and table["n"].to_list() == [2, 2, 2]
    assert table["selected_dev_macro_f1"].to_list() == pytest.approx([0.325, 0.255, 0.185])
    assert "best" not in table["near_best"].to_list()  # test labels no row in a dev ranking
    assert table["near_best"].to_list()[0] == ""  # ... and it says when test beats the dev choice significantly
    for text in (render_markdown(rows, spec, load_predictions(run)), render_html(rows, spec, predictions=load_predictions(run))):
        assert "the first row is the configuration chosen on dev" in text
        assert "no row is labelled best" in text
    md = render_markdown(rows, spec, load_predictions(run))
    first = next(line for line in md.splitlines() if line.startswith("| 1"))
    assert "0.1" in first and "0.325" in first
    from bench.reporting.plots import render_plots

    assert render_plots(rows, spec)  # the plots group the same way


def test_many_rows_give_the_same_adjusted_p_in_chunks(monkeypatch):
    """30 rows = 435 pairs, more than one chunk of resampled differences: the same p-values as all at once."""
    from bench.reporting import significance

    rng = np.random.default_rng(4)
    observed = rng.normal(0.7, 0.02, 30)
    draws = observed[:, None] + rng.normal(0, 0.01, (30, 500))
    chunked = pairwise_adjusted_p(observed, draws)
    monkeypatch.setattr(significance, "_PAIR_CHUNK", 10_000)
    assert np.allclose(chunked, pairwise_adjusted_p(observed, draws), equal_nan=True)
    assert (np.nan_to_num(chunked, nan=1.0) < 0.05).any() and (chunked[~np.isnan(chunked)] <= 1).all()
