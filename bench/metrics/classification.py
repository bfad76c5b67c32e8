"""Classification metrics, including macro-F1 on head and tail labels."""
from __future__ import annotations

from collections import Counter

import numpy as np


def head_tail_labels(train_labels: list[int] | np.ndarray, head_share: float = 0.8) -> tuple[set[int], set[int]]:
    """Head = the most frequent labels that together hold ``head_share`` of training instances.

    Labels are taken by descending count (ties by label id) until the running share reaches
    ``head_share``; the label that crosses the line is head. The rest are tail.
    """
    counts = Counter(int(l) for l in train_labels if l >= 0)
    total = sum(counts.values())
    head, running = set(), 0
    for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if running / max(total, 1) >= head_share:
            break
        head.add(label)
        running += n
    return head, set(counts) - head


def macro_f1_rows(true: np.ndarray, pred: np.ndarray, n_labels: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 of each row of (rows, items) label codes in [0, n_labels): the unweighted mean of
    per-label F1 = 2 TP / (n true + n predicted) over the labels present among that row's true labels
    (and in the boolean mask ``labels``, when given); 0 for a row without such a label.

    The one definition of macro-F1 in the harness (rows, bootstrap resamples, dev selection of late
    fusion and the linear probe); equal to scikit-learn's ``f1_score(average="macro",
    labels=<present labels>, zero_division=0)``.
    """
    true, pred = np.atleast_2d(np.asarray(true, dtype=np.int64)), np.atleast_2d(np.asarray(pred, dtype=np.int64))
    b = true.shape[0]
    offset = np.arange(b)[:, None] * n_labels
    shape = (b, n_labels)
    tp = np.bincount((offset + true)[true == pred], minlength=b * n_labels).reshape(shape)
    n_true = np.bincount((offset + true).ravel(), minlength=b * n_labels).reshape(shape)
    n_pred = np.bincount((offset + pred).ravel(), minlength=b * n_labels).reshape(shape)
    present = n_true > 0
    if labels is not None:
        present &= np.asarray(labels, dtype=bool)[None, :]
    f1 = np.where(present, 2 * tp / np.maximum(n_true + n_pred, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def macro_f1(y_true, y_pred, labels=None) -> float:
    """Macro-F1 of one prediction (non-negative integer labels) over the labels present in ``y_true``
    (restricted to ``labels`` when given); see ``macro_f1_rows``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        return 0.0
    n = int(max(y_true.max(), y_pred.max())) + 1
    mask = None
    if labels is not None:
        mask = np.zeros(n, dtype=bool)
        mask[[l for l in labels if 0 <= l < n]] = True
    return float(macro_f1_rows(y_true[None, :], y_pred[None, :], n, mask)[0])


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, train_labels: np.ndarray | None = None,
                           top_k: int = 5, head_labels: set[int] | frozenset[int] | None = None) -> dict[str, float]:
    """accuracy, macro_f1 (over labels present in y_true), top5_accuracy, head/tail macro-F1.

    Head/tail needs ``train_labels`` (the labels the model was trained on). Head labels are
    ``head_labels`` when given (fixed on the whole train split, before a fine-tune fraction cut
    it), else the head of ``train_labels``; a head label absent from ``train_labels`` counts as
    tail. Tail is every other label in y_true, including labels never seen in training.
    """
    known = y_true >= 0
    y_true, scores = y_true[known], scores[known]
    if len(y_true) == 0:
        return {}
    y_pred = scores.argmax(1)
    labels = sorted(set(y_true.tolist()))
    out = {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": macro_f1(y_true, y_pred),
    }
    k = min(top_k, scores.shape[1])
    topk = np.argsort(-scores, axis=1)[:, :k]
    out[f"top{top_k}_accuracy"] = float((topk == y_true[:, None]).any(1).mean())
    if train_labels is not None:
        seen = {int(l) for l in train_labels if l >= 0}
        head = (set(head_labels) if head_labels is not None else head_tail_labels(train_labels)[0]) & seen
        for name, group in (("head", set(labels) & head), ("tail", set(labels) - head)):
            present = sorted(group)
            out[f"{name}_macro_f1"] = macro_f1(y_true, y_pred, present) if present else None  # no such label on test: not measured
    return out
