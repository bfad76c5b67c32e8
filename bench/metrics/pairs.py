"""Pairwise matching metrics for labelled pairs (the pairs task).

Each labelled pair (left, right, label 0/1) gets a score, the cosine similarity of the two
items' embeddings; a pair is predicted a match when its score >= t.

- ``best_f1_threshold``: the t that maximises F1 over the given (dev) pairs. Candidates are the
  distinct scores; ties in F1 go to the highest threshold (the fewest predicted matches).
- ``pair_scores_at``: precision, recall and F1 of the positive class at t (scikit-learn's
  ``precision_recall_fscore_support(average="binary", zero_division=0)``).
- ``average_precision``: threshold-free, sum over distinct thresholds of (R_n - R_{n-1}) P_n,
  as scikit-learn's ``average_precision_score`` (no interpolation).
Pairs with equal scores are always decided together (one threshold cannot split them).
"""
from __future__ import annotations

import numpy as np


def _curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in descending order, and the true / all predicted positives at each
    threshold (score >= that value)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tp = np.cumsum(y)[last]
    return s[last], tp.astype(float), (last + 1).astype(float)


def _f1(tp: np.ndarray, predicted: np.ndarray, positives: int) -> np.ndarray:
    denom = predicted + positives
    return np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=denom > 0)


def best_f1_threshold(scores, labels) -> tuple[float | None, float | None]:
    """(threshold, F1 at it) maximising F1 on these pairs; (None, None) without a positive pair."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    positives = int(labels.sum())
    if positives == 0 or len(scores) == 0:
        return None, None
    thresholds, tp, predicted = _curve(scores, labels)
    f1 = _f1(tp, predicted, positives)
    best = np.flatnonzero(f1 == f1.max())[0]  # thresholds descend: the first best is the highest
    return float(thresholds[best]), float(f1[best])


def pair_scores_at(scores, labels, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of the match class with score >= threshold predicted a match
    (0 where undefined, as scikit-learn's zero_division=0)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    predicted = scores >= threshold
    tp = int((predicted & (labels == 1)).sum())
    n_pred, n_pos = int(predicted.sum()), int(labels.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * tp / (n_pred + n_pos) if n_pred + n_pos else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def average_precision(scores, labels) -> float | None:
    """Average precision of the match class; None without a positive pair."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    positives = int(labels.sum())
    if positives == 0:
        return None
    _, tp, predicted = _curve(scores, labels)
    recall = tp / positives
    precision = tp / predicted
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
