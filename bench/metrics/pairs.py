"""Pairwise matching metrics for labelled pairs (the pairs task), computed by scikit-learn.

Each labelled pair (left, right, label 0/1) has a score (the cosine of the two items'
embeddings, or a pair-scoring objective's logit); a pair is predicted a match when its score >= t.

- ``best_f1_threshold``: the t that maximises F1 over the given (dev) pairs, from
  ``precision_recall_curve`` (candidates are the distinct scores, so pairs with equal scores are
  decided together); ties in F1 go to the highest threshold (the fewest predicted matches).
- ``pair_scores_at``: precision, recall and F1 of the match class at t
  (``precision_recall_fscore_support(average="binary")``); None where undefined (no matching pair;
  precision when nothing is predicted a match), never 0.
- ``average_precision``: threshold-free ``average_precision_score`` (sum over thresholds of
  (R_n - R_{n-1}) P_n, no interpolation).
Without a matching pair the threshold, its F1, precision, recall, F1 and the average precision
are None. Scores are first rounded to 1e-6 (``bench.metrics.ties``): float32 noise makes no order.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support

from bench.metrics.ties import tie_rounded


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    return tie_rounded(scores), np.asarray(labels, dtype=int)


def predicted_matches(scores, threshold: float) -> np.ndarray:
    """1 where the (tie-rounded) score reaches the threshold: the prediction stored per test pair."""
    return (tie_rounded(scores) >= threshold).astype(int)


def best_f1_threshold(scores, labels) -> tuple[float | None, float | None]:
    """(threshold, F1 at it) maximising F1 on these pairs; (None, None) without a positive pair."""
    scores, labels = _arrays(scores, labels)
    if len(scores) == 0 or labels.sum() == 0:
        return None, None
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 == f1.max())[-1]  # thresholds ascend: the last best is the highest
    return float(thresholds[best]), float(f1[best])


def pair_scores_at(scores, labels, threshold: float) -> dict[str, float | None]:
    """Precision, recall and F1 of the match class with score >= threshold predicted a match.

    None where undefined, never 0: all three without a matching pair (recall is 0/0, and a
    precision or F1 of the match class measured where there is no match to find would rank models
    on nothing); precision when no pair is predicted a match (0/0; recall and F1 are then 0).
    """
    scores, labels = _arrays(scores, labels)
    if len(scores) == 0 or labels.sum() == 0:
        return {"precision": None, "recall": None, "f1": None}
    p, r, f, _ = precision_recall_fscore_support(labels, predicted_matches(scores, threshold), average="binary",
                                                 labels=[0, 1], pos_label=1, zero_division=np.nan)
    return {name: None if np.isnan(v) else float(v) for name, v in (("precision", p), ("recall", r), ("f1", f))}


def average_precision(scores, labels) -> float | None:
    """Average precision of the match class; None without a positive pair."""
    scores, labels = _arrays(scores, labels)
    if labels.sum() == 0:
        return None
    return float(average_precision_score(labels, scores))
