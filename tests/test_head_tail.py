"""Head / tail labels (the most frequent labels holding 80% of training items) and their macro-F1."""
from __future__ import annotations


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
    assert m["tail_macro_f1"] is None  # no tail label on test: not measured, never a number
    assert m["head_macro_f1"] == pytest.approx(2 / 3)  # label 0: P 1/2 R 1; label 1: P 1 R 1/2
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert "head_macro_f1" not in classification_metrics(y_true, one_hot_scores([0, 1, 0, 2], 4))


def per_label_f1(y_true: list[int], y_pred: list[int], label: int) -> float:
    tp = sum(t == label and p == label for t, p in zip(y_true, y_pred))
    fp = sum(t != label and p == label for t, p in zip(y_true, y_pred))
    fn = sum(t == label and p != label for t, p in zip(y_true, y_pred))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_head_fixed_on_the_full_train_split_and_unseen_labels_count_as_tail():
    full_train = labels_with_counts({0: 40, 1: 30, 2: 15, 3: 10, 4: 5})  # head of the full split: {0, 1, 2}
    head, _ = head_tail_labels(full_train)
    assert head == {0, 1, 2}
    reduced = np.array([0] * 4 + [1] + [3] * 6 + [4] * 5)  # a cut where 1 is rare, 2 is gone, 3 and 4 lead
    assert head_tail_labels(reduced)[0] != head
    y_true = [0, 0, 1, 1, 2, 2, 3, 4, 5]  # 5: in test only
    y_pred = [0, 1, 1, 1, 2, 0, 3, 3, 5]
    m = classification_metrics(np.array(y_true), one_hot_scores(y_pred, 6), reduced, head_labels=frozenset(head))
    # head = {0, 1} (the full split's head that the model saw); tail = {2 (cut away), 3, 4, 5 (never in train)}
    assert m["head_macro_f1"] == pytest.approx(np.mean([per_label_f1(y_true, y_pred, l) for l in (0, 1)]))
    assert m["tail_macro_f1"] == pytest.approx(np.mean([per_label_f1(y_true, y_pred, l) for l in (2, 3, 4, 5)]))
    # without head_labels the head comes from the train labels given, and test-only labels are tail
    m = classification_metrics(np.array(y_true), one_hot_scores(y_pred, 6), full_train)
    assert m["tail_macro_f1"] == pytest.approx(np.mean([per_label_f1(y_true, y_pred, l) for l in (3, 4, 5)]))


def _prepared(registry, **overrides):
    from bench.config.schema import TrialConfig
    from bench.trial.context import TrialContext
    from bench.trial.prepare import prepare_data
    from conftest import TINY_DATA, tiny_trial

    data = {**TINY_DATA, "options": {**TINY_DATA["options"], "n_products": 200, "n_labels": 12, "zipf": 1.2}}
    cfg = TrialConfig.model_validate(tiny_trial(dataset=data, **overrides))
    return prepare_data(cfg, TrialContext(registry=registry))


def test_a_finetune_fraction_keeps_the_full_splits_head_and_every_label(registry):
    full = _prepared(registry)
    for fraction in (0.05, 0.3):
        cut = _prepared(registry, finetune_fraction=fraction)
        full_ids = {r["item_id"] for r in full.splits["train"]}
        cut_ids = {r["item_id"] for r in cut.splits["train"]}
        assert cut_ids < full_ids and len(cut_ids) < 0.5 * len(full_ids)
        for split in ("dev", "test"):
            assert [r["item_id"] for r in cut.splits[split]] == [r["item_id"] for r in full.splits[split]]
        expected_head, _ = head_tail_labels(full.train_labels)  # computed on the full split, by hand
        assert cut.head_labels == frozenset(expected_head) == full.head_labels
        if fraction == 0.05:  # the cut's own head differs, so the check above can fail
            assert head_tail_labels(cut.train_labels)[0] != expected_head
        assert set(cut.train_labels.tolist()) == set(full.train_labels.tolist())  # every label keeps an item


def test_ssl_records_carry_no_labels(registry):
    stages = [{"name": "adapt", "data": "ssl", "objectives": ["simcse"], "epochs": 1, "batch_size": 16},
              {"name": "finetune", "data": "train", "objectives": ["cross_entropy"], "epochs": 1, "batch_size": 16}]
    data = _prepared(registry, stages=stages)
    assert len(data.splits["ssl"]) > 50
    assert {r["label"] for r in data.splits["ssl"]} == {-1}
    assert (data.train_labels >= 0).all()


def test_an_objective_needing_labels_is_refused_on_the_ssl_split_when_built(registry):
    """Suite validation cannot see the needs of a factory without a return annotation; building can."""
    from bench.errors import BenchError
    from bench.api.interfaces import Objective
    from bench.api.registry import PluginSpec, Registry
    from bench.config.schema import TrialConfig
    from bench.trial.build import build_model, build_objectives
    from bench.trial.context import TrialContext
    from bench.trial.prepare import prepare_data
    from conftest import tiny_trial

    class NeedsLabels(Objective):
        needs = frozenset({"labels"})

    reg = Registry()
    for spec in registry.all():
        reg.add(spec)
    reg.add(PluginSpec("objective", "labelled", "test objective", lambda opts, ctx: NeedsLabels()))
    cfg = TrialConfig.model_validate(tiny_trial(stages=[{"name": "adapt", "data": "ssl", "objectives": ["labelled"]}]))
    ctx = TrialContext(registry=reg)
    data = prepare_data(cfg, ctx)
    model = build_model(cfg, ctx, data.task)
    with pytest.raises(BenchError) as err:
        build_objectives(cfg.stages[0], cfg, ctx, model, data.task, 0)
    assert err.value.field == "trial.stages[0].data" and "'labelled', which needs labels" in err.value.message
