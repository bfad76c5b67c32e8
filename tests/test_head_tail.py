"""Head / tail labels (the most frequent labels holding 80% of training items) and their macro-F1."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics.classification import classification_metrics, head_tail_labels


def labels_with_counts(counts: dict[int, int]) -> list[int]:
    out = [label for label, n in counts.items() for _ in range(n)]
    np.random.default_rng(0).shuffle(out)  # order in the list must not matter
    return out


def test_head_is_the_most_frequent_labels_up_to_80_percent():
    # counts 50, 20, 10, 10, 5, 3, 2 under shuffled ids; 50 + 20 + 10 = 80% of 100
    train = labels_with_counts({3: 50, 0: 20, 2: 10, 6: 10, 1: 5, 5: 3, 4: 2})
    head, tail = head_tail_labels(train)
    assert head == {3, 0, 2}
    assert tail == {6, 1, 5, 4}


def test_ties_go_to_the_lower_label_id():
    train = labels_with_counts({9: 50, 4: 20, 8: 10, 1: 10, 7: 10})
    head, tail = head_tail_labels(train)
    assert head == {9, 4, 1}  # 1 beats 7 and 8 at the same count
    assert tail == {7, 8}


def test_the_label_that_crosses_the_line_is_head():
    head, tail = head_tail_labels(labels_with_counts({0: 60, 1: 30, 2: 10}))
    assert (head, tail) == ({0, 1}, {2})  # 60% < 80%, so label 1 (reaching 90%) is still head


def test_share_option_unknown_labels_and_a_single_label():
    train = labels_with_counts({3: 50, 0: 20, 2: 10, 6: 10}) + [-1] * 40
    assert head_tail_labels(train, head_share=0.5) == ({3}, {0, 2, 6})
    assert head_tail_labels([5, 5, 5]) == ({5}, set())


def one_hot_scores(pred: list[int], n: int) -> np.ndarray:
    return np.eye(n)[pred] * 3.0


def test_head_and_tail_macro_f1_on_a_hand_made_prediction():
    train = np.array([0] * 5 + [1] * 3 + [2] + [3])  # head {0, 1}, tail {2, 3}
    y_true = np.array([0, 0, 1, 1, 2, 3, 3])
    y_pred = [0, 1, 1, 1, 3, 3, 2]
    m = classification_metrics(y_true, one_hot_scores(y_pred, 4), train)
    # per-label F1: 0 -> 2/3 (P 1, R 1/2), 1 -> 0.8 (P 2/3, R 1), 2 -> 0, 3 -> 0.5 (P 1/2, R 1/2)
    assert m["head_macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["tail_macro_f1"] == pytest.approx((0 + 0.5) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0 + 0.5) / 4)
    assert m["accuracy"] == pytest.approx(4 / 7)


def test_a_group_with_no_test_labels_is_nan_and_unknown_test_labels_are_ignored():
    train = np.array([0] * 5 + [1] * 3 + [2] + [3])
    y_true = np.array([0, 1, 1, -1])
    m = classification_metrics(y_true, one_hot_scores([0, 1, 0, 2], 4), train)
    assert math.isnan(m["tail_macro_f1"])
    assert m["head_macro_f1"] == pytest.approx(2 / 3)  # label 0: P 1/2 R 1; label 1: P 1 R 1/2
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert "head_macro_f1" not in classification_metrics(y_true, one_hot_scores([0, 1, 0, 2], 4))
