"""Pairwise metrics against scikit-learn and a brute-force threshold search."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from bench.metrics.pairs import average_precision, best_f1_threshold, pair_scores_at, predicted_matches


def _random(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
    labels[0] = 1
    scores = rng.normal(labels * rng.uniform(0, 2), 1.0)
    if ties:
        scores = np.round(scores, 1)  # many pairs share a score
    return np.round(scores, 6), labels  # at the tie resolution already (the rounding: see the float32 test)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_equal_sklearn(seed, ties):
    scores, labels = _random(seed, 60 + 7 * seed, ties)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    for t in np.quantile(scores, [0.1, 0.5, 0.9]).tolist() + [scores.max() + 1]:
        p, r, f, _ = precision_recall_fscore_support(labels, scores >= t, average="binary", zero_division=np.nan)
        got = pair_scores_at(scores, labels, t)
        assert got["precision"] is None if np.isnan(p) else got["precision"] == pytest.approx(p, abs=1e-12)
        assert (got["recall"], got["f1"]) == pytest.approx((r, f), abs=1e-12)
    nothing = pair_scores_at(scores, labels, scores.max() + 1)  # no pair predicted a match: precision is 0/0
    assert nothing == {"precision": None, "recall": 0.0, "f1": 0.0}


def test_precision_recall_and_f1_are_undefined_without_a_matching_pair():
    """Without a match to find, none of the three is a figure (never 0.0), whatever the threshold."""
    scores = np.array([0.1, 0.5, 0.9])
    for t in (0.0, 0.5, 2.0):
        assert pair_scores_at(scores, np.zeros(3, dtype=int), t) == {"precision": None, "recall": None, "f1": None}
    assert pair_scores_at([], [], 0.5) == {"precision": None, "recall": None, "f1": None}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_best_threshold_is_the_brute_force_best(seed, ties):
    scores, labels = _random(seed + 100, 50, ties)
    best_t, best_f = None, -1.0
    for t in sorted(set(scores.tolist()), reverse=True):  # descending: ties keep the highest threshold
        f = precision_recall_fscore_support(labels, scores >= t, average="binary", zero_division=0)[2]
        if f > best_f + 1e-15:
            best_t, best_f = t, f
    t, f = best_f1_threshold(scores, labels)
    assert t == best_t and f == pytest.approx(best_f, abs=1e-12)


def test_no_positive_pair_gives_no_threshold_and_no_ap():
    scores, labels = np.array([0.1, 0.5, 0.9]), np.zeros(3, dtype=int)
    assert best_f1_threshold(scores, labels) == (None, None)
    assert average_precision(scores, labels) is None


def test_float32_noise_is_a_tie_in_every_pair_metric():
    """Identical titles give cosines 0.99999988 .. 1.00000024: one tie, as if they were all 1.0."""
    noisy = np.array([0.99999988, 1.00000024, 1.0, 0.99999994, 0.5, 0.2], dtype=np.float32).astype(float)
    exact = np.array([1.0, 1.0, 1.0, 1.0, 0.5, 0.2])
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert average_precision_score(labels, noisy) != pytest.approx(average_precision_score(labels, exact))  # the noise
    assert average_precision(noisy, labels) == pytest.approx(average_precision_score(labels, exact), abs=1e-12)
    assert best_f1_threshold(noisy, labels) == best_f1_threshold(exact, labels)
    assert pair_scores_at(noisy, labels, 1.0) == pair_scores_at(exact, labels, 1.0)
    assert predicted_matches(noisy, 1.0).tolist() == [1, 1, 1, 1, 0, 0]
