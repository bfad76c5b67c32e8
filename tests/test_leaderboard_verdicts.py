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
from bench.reporting import significance
from bench.reporting.significance import (EncodedPredictions, _average_precision_rows, _weighted_average_precision,
                                          group_significance, leaderboard_marks, mark_groups, pairwise_adjusted_p,
                                          permutation_adjusted_p, permutation_null, trial_intervals)
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


# ---- the permutation test of single-seed leaderboards ----------------------------------------------

def _continuous(n_groups: int, n_units: int, rng: np.random.Generator, shift: float = 0.0) -> list[EncodedPredictions]:
    """Per-query values of equally good groups (the first ``shift`` ahead): no ties, so p-values are not lumpy."""
    return [EncodedPredictions(None, None, None, 0, {"mrr@10": rng.random(n_units) + (shift if g == 0 else 0.0)})
            for g in range(n_groups)]


def _labelled(accuracies: list[float], n: int, rng: np.random.Generator) -> list[EncodedPredictions]:
    true = rng.integers(0, N_LABELS, n)
    return [EncodedPredictions(true, np.where(rng.random(n) < acc, true, (true + rng.integers(1, N_LABELS, n)) % N_LABELS),
                               (rng.random(n) < 0.95).astype(bool), N_LABELS) for acc in accuracies]


def _pairs(signals: list[float], n: int, rng: np.random.Generator) -> list[EncodedPredictions]:
    labels = (rng.random(n) < 0.3).astype(np.int64)
    out = []
    for signal in signals:
        scores = np.round(np.tanh(rng.normal(labels * signal, 1.0) / 3), 2)  # rounded: ties within a group
        out.append(EncodedPredictions(None, None, None, 0, pair_label=labels, pair_score=scores,
                                      pair_pred=(scores > 0.1).astype(np.int64)))
    return out


def test_two_equal_models_get_uniform_permutation_p_values():
    """Exactness: with two models equal in distribution, P(p <= a) is a (within Monte Carlo error)."""
    rng = np.random.default_rng(0)
    p = np.array([permutation_adjusted_p(*permutation_null(_continuous(2, 40, rng), "mrr@10", 199, seed=d))[0, 1]
                  for d in range(600)])
    for a in (0.05, 0.1, 0.25, 0.5, 0.75):
        assert abs((p <= a).mean() - a) < 3.5 * np.sqrt(a * (1 - a) / len(p)), a


def test_ten_equal_models_mark_a_row_in_at_most_alpha_of_leaderboards():
    rng = np.random.default_rng(1)
    wrong = [any(m == "" for m in leaderboard_marks(*permutation_null(_continuous(10, 30, rng), "mrr@10", 99, seed=d),
                                                   permuted=True)[1]) for d in range(300)]
    assert np.mean(wrong) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "top5_accuracy", "pair_ap", "pair_f1", "pair_precision",
                                    "pair_recall", "mrr@10"])
def test_unshuffled_values_are_the_metric_and_a_planted_gap_gets_p_below_001(metric):
    rng = np.random.default_rng(2)
    if metric.startswith("pair"):
        trials = _pairs([3.0, 0.2, 0.2], 400, rng)
    elif metric == "mrr@10":
        trials = _continuous(3, 300, rng, shift=0.3)
    else:
        trials = _labelled([0.9, 0.5, 0.5], 300, rng)
        if metric == "top5_accuracy":
            for t, share in zip(trials, (0.95, 0.6, 0.6)):
                t.top_hit = rng.random(300) < share
    observed, shuffled = permutation_null(trials, metric, 300)
    whole = np.arange(trials[0].n_items)[None, :]
    assert observed == pytest.approx([t.score(metric, whole)[0] for t in trials], abs=1e-12)
    p, marks, method = mark_groups([[t] for t in trials], metric, 300)
    assert method == "permutation" and marks[0] == "best" and marks[1:] == ["", ""]
    assert p[1] < 0.01 and p[1] == pytest.approx(1 / 301)  # no shuffle reaches the planted gap
    assert permutation_adjusted_p(observed, shuffled)[1, 2] > 0.05  # the two equal ones are not told apart


def test_pair_ap_test_reads_only_each_rows_order():
    """AP reads only the order of a row's scores, so its test must too: a row scored as a logit and
    one as a probability (here: one row's scores shifted by +10, above all of the other's) give the
    same shuffled values; shuffling raw scores would rank every pair from the shifted row first."""
    rng = np.random.default_rng(9)
    trials = _pairs([1.0, 0.5], 300, rng)
    shifted = [EncodedPredictions(None, None, None, 0, pair_label=trials[0].pair_label,
                                  pair_score=trials[0].pair_score + 10, pair_pred=trials[0].pair_pred), trials[1]]
    observed, shuffled = permutation_null(trials, "pair_ap", 200, seed=3)
    observed_shifted, shuffled_shifted = permutation_null(shifted, "pair_ap", 200, seed=3)
    assert observed == pytest.approx(observed_shifted, abs=1e-12)
    assert np.allclose(shuffled, shuffled_shifted, atol=1e-12)


def test_identical_models_get_p_one_and_seeded_groups_the_bootstrap():
    rng = np.random.default_rng(3)
    (a,) = _labelled([0.7], 200, rng)
    p, marks, method = mark_groups([[a], [a]], "macro_f1", 200)
    assert method == "permutation" and marks == ["best", "≈"] and p[1] == 1.0
    assert mark_groups([[a, a], [a, a]], "accuracy", 200)[2] == "bootstrap"


def test_shuffles_in_chunks_are_the_same_shuffles(monkeypatch):
    trials = _labelled([0.7, 0.6, 0.65], 150, np.random.default_rng(4))
    whole = permutation_null(trials, "macro_f1", 250, seed=5)[1]
    monkeypatch.setattr(significance, "_PERMUTED_CELLS", 3 * 150 * 7)  # 7 shuffles a chunk
    assert np.array_equal(whole, permutation_null(trials, "macro_f1", 250, seed=5)[1])


def test_row_average_precision_is_sklearn_with_ties():
    rng = np.random.default_rng(6)
    labels = (rng.random(70) < 0.4).astype(np.int64)
    scores = np.round(rng.normal(size=(6, 70)), 1)
    for row, value in zip(scores, _average_precision_rows(scores, labels)):
        assert value == pytest.approx(average_precision_score(labels, row), abs=1e-12)


def test_single_seed_leaderboard_marks_come_from_the_permutation_test(tmp_path):
    """One seed a row: the marks are the permutation test's (p never below 1 / (shuffles + 1))."""
    true = np.random.default_rng(8).integers(0, N_LABELS, 300)
    good = noisy_predictions(true, 0.85, 1)
    run = write_run(tmp_path / "run", [trial("a", {"fusion": "a"}, 0, true, good),
                                       trial("same", {"fusion": "same"}, 0, true, good),
                                       trial("bad", {"fusion": "bad"}, 0, true, noisy_predictions(true, 0.4, 2))])
    _, rows = load_run(run)
    stats = group_significance(rows, load_predictions(run), ["fusion"], ["accuracy"], "accuracy", ("a",))
    p = dict(zip(stats["fusion"], stats["best_p"]))
    marks = dict(zip(stats["fusion"], stats["near_best"]))
    assert marks == {"a": "best", "same": "≈", "bad": ""}
    assert p["same"] == 1.0 and p["bad"] == pytest.approx(1 / (significance.N_RESAMPLES + 1))
