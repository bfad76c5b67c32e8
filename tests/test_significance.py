"""Bootstrap intervals and the ≈best mark, on hand-made predictions whose answer is known."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table, render_markdown
from bench.reporting.write import leaderboard_for_run, load_predictions
from bench.reporting.results import load_run
from bench.metrics.retrieval import ranking_names
from bench.reporting.significance import (_macro_f1, encode_predictions, group_distribution, group_significance, interval,
                                         pooled_over_seeds, resamples, share_not_ahead,
                                         align, trial_intervals)
from report_runs import N_LABELS, matching_run, noisy_predictions, retrieval_run, suite_copy, trial, write_run


def _true(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, N_LABELS, n)


def test_vectorised_macro_f1_matches_sklearn_on_every_resample():
    true = _true(120)
    pred = noisy_predictions(true, 0.6, seed=1)
    idx = next(resamples(len(true), 20, seed=3))
    ours = _macro_f1(true[idx], pred[idx], N_LABELS)
    for row, value in zip(idx, ours):
        t, p = true[row], pred[row]
        expected = f1_score(t, p, labels=sorted(set(t.tolist())), average="macro", zero_division=0)
        assert value == pytest.approx(expected, abs=1e-12)


def test_interval_contains_the_stored_row_value_and_narrows_with_more_items(tmp_path):
    small, large = _true(60, 1), _true(2000, 2)
    run = write_run(tmp_path / "run", [
        trial("small", {"fusion": "a"}, 0, small, noisy_predictions(small, 0.7, 3)),
        trial("large", {"fusion": "b"}, 0, large, noisy_predictions(large, 0.7, 4)),
    ])
    _, rows = load_run(run)
    ci = trial_intervals(rows, load_predictions(run))
    assert set(ci["metric"]) == {"accuracy", "macro_f1", "top5_accuracy"}
    by_row = {r["trial_key"]: r for r in rows.iter_rows(named=True)}
    for r in ci.iter_rows(named=True):
        assert r["value"] == pytest.approx(by_row[r["trial_key"]][r["metric"]], abs=1e-9)  # same as the trial's metric
        if r["metric"] != "top5_accuracy":  # top-5 is 1.0 everywhere here
            assert r["ci_low"] < r["value"] < r["ci_high"]
    width = {(r["trial_key"], r["metric"]): r["ci_high"] - r["ci_low"] for r in ci.iter_rows(named=True)}
    for m in ("accuracy", "macro_f1"):
        assert width[("large", m)] < width[("small", m)] / 3  # ~sqrt(2000/60) = 5.8x narrower


def test_intervals_are_seeded(tmp_path):
    true = _true(200)
    run = write_run(tmp_path / "run", [trial("t", {"fusion": "a"}, 0, true, noisy_predictions(true, 0.5, 1))])
    _, rows = load_run(run)
    preds = load_predictions(run)
    first, again = trial_intervals(rows, preds, seed=0), trial_intervals(rows, preds, seed=0)
    other = trial_intervals(rows, preds, seed=1)
    assert first.equals(again)
    assert not first["ci_low"].equals(other["ci_low"])


def _groups_run(tmp_path, acc_b: float, same_as_a: bool = False, n: int = 300):
    true = _true(n, 7)
    pred_a = [noisy_predictions(true, 0.8, s) for s in (10, 11)]
    pred_b = pred_a if same_as_a else [noisy_predictions(true, acc_b, s) for s in (20, 21)]
    trials = [trial(f"{g}{s}", {"fusion": g}, s, true, p[s]) for g, p in (("a", pred_a), ("b", pred_b)) for s in (0, 1)]
    return write_run(tmp_path / "run", trials, suite_copy(matrix={"fusion": ["a", "b"], "seed": [0, 1]}))


def test_identical_predictions_are_not_significantly_different(tmp_path):
    run = _groups_run(tmp_path, 0.0, same_as_a=True)
    _, rows = load_run(run)
    stats = group_significance(rows, load_predictions(run), ["fusion"], ["accuracy"], "accuracy", ("a",))
    marks = dict(zip(stats["fusion"], stats["near_best"]))
    p = dict(zip(stats["fusion"], stats["best_p"]))
    assert marks == {"a": "best", "b": "≈"} and p["b"] == 1.0  # a tie: the best is never ahead


def test_a_much_better_group_is_significant_and_a_close_one_is_not(tmp_path):
    run = _groups_run(tmp_path, 0.4)
    _, rows = load_run(run)
    stats = group_significance(rows, load_predictions(run), ["fusion"], ["accuracy", "macro_f1"], "macro_f1", ("a",))
    b = stats.filter(pl.col("fusion") == "b").row(0, named=True)
    assert b["near_best"] == "" and b["best_p"] < 0.01
    assert b["accuracy_ci_high"] < stats.filter(pl.col("fusion") == "a")["accuracy_ci_low"][0]

    close = _groups_run(tmp_path / "close", 0.79, n=80)
    _, rows = load_run(close)
    table = leaderboard_table(rows, LeaderboardSpec(group_by=["fusion"], sort="accuracy"), load_predictions(close))
    assert table["near_best"].to_list()[0] == "best" and table["near_best"].to_list()[1] == "≈"


def test_group_interval_pools_seeds_on_the_same_resamples(tmp_path):
    run = _groups_run(tmp_path, 0.5)
    _, rows = load_run(run)
    preds = load_predictions(run)
    stats = group_significance(rows, preds, ["fusion"], ["accuracy"], None, None)
    assert "near_best" not in stats.columns
    group_b = stats.filter(pl.col("fusion") == "b").row(0, named=True)
    mean_b = rows.filter(pl.col("fusion") == "b")["accuracy"].mean()
    assert group_b["accuracy_ci_low"] < mean_b < group_b["accuracy_ci_high"]


def test_group_interval_takes_the_seed_spread_into_account(tmp_path):
    """Two seeds far apart (accuracy 0.3 and 0.7): items alone give a narrow interval around 0.5; the
    seed part of the resampling widens it by about the seed spread (sd of the mean of 2 seeds: 0.2)."""
    true = _true(400, 7)
    run = write_run(tmp_path / "run", [trial(f"a{s}", {"fusion": "a"}, s, true, noisy_predictions(true, acc, 30 + s))
                                       for s, acc in ((0, 0.3), (1, 0.7))])
    encoded = encode_predictions(load_predictions(run))
    trials = align([encoded["a0"], encoded["a1"]], "accuracy")
    items_only = interval(group_distribution(trials, "accuracy", 400, resample_seeds=False))
    both = interval(group_distribution(trials, "accuracy", 400))
    assert items_only[1] - items_only[0] < 0.08
    assert both[1] - both[0] > 0.3 and both[0] < 0.35 and both[1] > 0.65


def test_seed_resampling_is_unbiased_in_variance():
    """The seed part of a group's draws has variance s^2/m (sample variance over m seeds), not (m-1)/m of it."""
    values = np.array([[0.2], [0.5], [0.6]]).repeat(20000, axis=1)
    drawn = pooled_over_seeds(values, np.random.default_rng(0))
    assert drawn.mean() == pytest.approx(values[:, 0].mean(), abs=0.003)
    assert drawn.var() == pytest.approx(values[:, 0].var(ddof=1) / 3, rel=0.05)


def test_paired_comparison_uses_only_items_both_groups_were_tested_on(tmp_path):
    true = _true(200, 3)
    pred = noisy_predictions(true, 0.7, 5)
    # b was tested on items 100..299, a on 0..199: on the shared 100 items b is a's exact copy
    run = write_run(tmp_path / "run", [
        trial("a0", {"fusion": "a"}, 0, true, pred),
        trial("b0", {"fusion": "b"}, 0, np.r_[true[100:], _true(100, 9)], np.r_[pred[100:], _true(100, 9)],
              item_offset=100),
    ])
    encoded = encode_predictions(load_predictions(run))
    a, b = align([encoded["a0"], encoded["b0"]])
    assert len(a.true) == 100 and (a.pred == b.pred).all()
    assert share_not_ahead([a], [b], "accuracy", 200) == 1.0


def test_leaderboard_markdown_shows_intervals_and_the_mark_with_a_note(tmp_path):
    run = _groups_run(tmp_path, 0.4)
    text = leaderboard_for_run(run, "md")
    table = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    header, body = table[0], {r[1]: dict(zip(table[0], r)) for r in table[1:]}
    assert {"accuracy 95% CI", "macro_f1 95% CI", "≈best"} <= set(header)
    assert body["a"]["≈best"] == "best" and body["b"]["≈best"] == "p<0.001"
    low, high = map(float, body["a"]["accuracy 95% CI"].split("–"))
    assert low < float(body["a"]["accuracy"].split(" ± ")[0]) < high
    assert "paired over the same test items" in text and "percentile bootstrap over test items" in text
    assert "at most 5% of leaderboards mark any row wrongly" in text
    csv_header = leaderboard_for_run(run, "csv").splitlines()[0].split(",")
    assert {"accuracy_ci_low", "accuracy_ci_high", "best_p", "near_best"} <= set(csv_header)


def test_no_intervals_without_labelled_predictions(tmp_path):
    run = matching_run(tmp_path / "run", {"x": [0.8, 0.7], "y": [0.5, 0.6]})
    _, rows = load_run(run)
    text = render_markdown(rows, LeaderboardSpec(group_by=["method"], sort="f1"), load_predictions(run))
    assert "95% CI" not in text and "≈best" not in text
    assert group_significance(rows, load_predictions(run), ["method"], ["accuracy"], "f1", ("x",)) is None


RETRIEVAL = ranking_names(10) + ["f1", "f1_all"]


def test_retrieval_intervals_come_from_the_stored_per_query_values(tmp_path):
    run = retrieval_run(tmp_path / "run", {"a": 1.0})
    _, rows = load_run(run)
    ci = trial_intervals(rows, load_predictions(run))
    assert set(ci["metric"]) == set(RETRIEVAL)
    by_row = {r["trial_key"]: r for r in rows.iter_rows(named=True)}
    for r in ci.iter_rows(named=True):
        assert r["value"] == pytest.approx(by_row[r["trial_key"]][r["metric"]], abs=1e-12)  # the row's own figure
        assert r["ci_low"] < r["value"] < r["ci_high"]
        assert r["n_items"] == 180  # every test query has two matches
    preds = load_predictions(run)
    assert preds.filter(pl.col("trial_key") == "a-0").height == 180


def test_retrieval_interval_resamples_queries_by_hand():
    # three queries with recall 1, 0, 0.5: every resample's mean is a mean of three of them
    frame = pl.DataFrame({"trial_key": ["t"] * 4, "item_id": list("abcd"), "group": [0, 0, 1, 2],
                          "mar@10": [1.0, 0.0, 0.5, None]})
    (trial,) = align([encode_predictions(frame)["t"]], "mar@10")
    assert trial.n_items == 3
    idx = next(resamples(3, 50, seed=0))
    expected = np.array([[1.0, 0.0, 0.5][i] for row in idx for i in row]).reshape(idx.shape).mean(axis=1)
    assert trial.score("mar@10", idx) == pytest.approx(expected)


def test_retrieval_near_best_marks_a_clear_gap_and_not_a_small_one(tmp_path):
    run = retrieval_run(tmp_path / "run", {"good": 0.9, "close": 0.92, "bad": 1.6})
    _, rows = load_run(run)
    preds = load_predictions(run)
    stats = group_significance(rows, preds, ["method"], ["mar@10", "f1"], "mar@10", ("good",))
    marks = dict(zip(stats["method"], stats["near_best"]))
    p = dict(zip(stats["method"], stats["best_p"]))
    assert marks == {"good": "best", "close": "≈", "bad": ""}
    assert p["bad"] < 0.01 and p["close"] >= 0.05
    bad = stats.filter(pl.col("method") == "bad").row(0, named=True)
    good = stats.filter(pl.col("method") == "good").row(0, named=True)
    assert bad["mar@10_ci_high"] < good["mar@10_ci_low"]
    mean_good = rows.filter(pl.col("method") == "good")["f1"].mean()
    assert good["f1_ci_low"] < mean_good < good["f1_ci_high"]


def test_retrieval_leaderboard_shows_intervals_from_stored_results(tmp_path):
    run = retrieval_run(tmp_path / "run", {"good": 0.9, "bad": 1.6})
    text = leaderboard_for_run(run, "md")
    header = next(line for line in text.splitlines() if line.startswith("| "))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert {"mar@10 95% CI", "f1 95% CI", "map@10 95% CI", "ndcg@10 95% CI", "≈best"} <= set(cells)
    assert "retrieval metrics resample the queries they score" in text
