"""Classification metrics, including macro-F1 on head and tail labels."""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics import f1_score


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
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    k = min(top_k, scores.shape[1])
    topk = np.argsort(-scores, axis=1)[:, :k]
    out[f"top{top_k}_accuracy"] = float((topk == y_true[:, None]).any(1).mean())
    if train_labels is not None:
        seen = {int(l) for l in train_labels if l >= 0}
        head = (set(head_labels) if head_labels is not None else head_tail_labels(train_labels)[0]) & seen
        for name, group in (("head", set(labels) & head), ("tail", set(labels) - head)):
            present = sorted(group)
            out[f"{name}_macro_f1"] = (float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
                                       if present else None)  # no such label on test: not measured
    return out
