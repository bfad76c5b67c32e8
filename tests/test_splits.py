"""Split assignment on many random catalogues: group-disjoint, stratified by label, and with
singletons and large groups in every split in proportion (counted here by plain loops)."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import polars as pl
import pytest

from bench.trial.splits import allocate, take_fraction

FRACTIONS = {"train": 0.7, "dev": 0.15, "test": 0.15}
SSL_FRACTIONS = {"ssl": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1}
LARGE = 9  # a "large" group has 9+ listings


def random_catalogue(seed: int, groups: bool = True) -> pl.DataFrame:
    """Long-tailed labels (some catalogues unlabeled), a random mix of lone items (no group, or a
    group of one) and groups of 2 to max_size listings, a few listings labeled off their group."""
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(1, 30))
    labeled = rng.random() < 0.8
    p_single = rng.uniform(0.05, 0.8) if groups else 1.0
    max_size = int(rng.integers(4, 31))
    n_items = int(rng.integers(3000, 6000))
    weights = rng.zipf(1.5, n_labels).astype(float)
    weights /= weights.sum()
    rows, gid = [], 0
    while len(rows) < n_items:
        label = f"L{rng.choice(n_labels, p=weights)}" if labeled else None
        if rng.random() < p_single:
            size, group = 1, (f"g{gid}" if groups and rng.random() < 0.5 else None)
        else:
            size, group = int(rng.integers(2, max_size + 1)) if rng.random() < 0.4 else int(min(max_size, rng.zipf(1.6) + 1)), f"g{gid}"
        gid += 1
        for _ in range(size):
            own = f"L{rng.integers(n_labels)}" if labeled and size > 2 and rng.random() < 0.05 else label
            rows.append({"item_id": f"i{len(rows)}", "label": own, "group": group})
    return pl.DataFrame(rows, schema={"item_id": pl.Utf8, "label": pl.Utf8, "group": pl.Utf8})


def unit_sizes_and_modes(items: pl.DataFrame) -> tuple[list[int], dict[str, str | None]]:
    """Per item the size of its unit (group, or the item alone); per unit its most common label."""
    rows = items.to_dicts()
    unit = [("g", r["group"]) if r["group"] is not None else ("i", r["item_id"]) for r in rows]
    size = Counter(unit)
    labels: dict[tuple, Counter] = defaultdict(Counter)
    for u, r in zip(unit, rows):
        if r["label"] is not None:
            labels[u][r["label"]] += 1
    modes = {u: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for u, c in labels.items()}
    return [size[u] for u in unit], modes


def check_properties(items: pl.DataFrame, split: list[str], fractions: dict[str, float], seed: int) -> None:
    where = f"catalogue {seed}"
    rows = items.to_dicts()
    assert set(split) <= set(fractions), where
    group_splits: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(rows, split):
        if r["group"] is not None:
            group_splits[r["group"]].add(s)
    assert all(len(v) == 1 for v in group_splits.values()), f"{where}: a group spans two splits"

    sizes, modes = unit_sizes_and_modes(items)
    n = len(rows)
    single = [z == 1 for z in sizes]
    large = [z >= LARGE for z in sizes]
    cat_single, cat_large = sum(single) / n, sum(large) / n
    for name, share in fractions.items():
        members = [i for i, s in enumerate(split) if s == name]
        assert abs(len(members) / n - share) <= 0.02, f"{where}: {name} holds {len(members) / n:.3f} of items"
        split_single = sum(single[i] for i in members) / len(members)
        split_large = sum(large[i] for i in members) / len(members)
        assert abs(split_single - cat_single) <= 0.03, \
            f"{where}: {name} is {split_single:.3f} singletons, the catalogue {cat_single:.3f}"
        assert abs(split_large - cat_large) <= 0.05, \
            f"{where}: {name} is {split_large:.3f} large-group items, the catalogue {cat_large:.3f}"

    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r["label"] is not None:
            by_label[r["label"]].append(i)
    for label, members in by_label.items():
        # a label can only be stratified to within one unit: test those made of many small units
        if len(members) >= 100 and max(sizes[i] for i in members) <= 0.05 * len(members):
            counts = Counter(split[i] for i in members)
            for name, share in fractions.items():
                assert abs(counts[name] / len(members) - share) <= 0.05, \
                    f"{where}: label {label} has {counts[name] / len(members):.3f} of its items in {name}"
    largest = max(fractions, key=fractions.get)
    unit_of = [("g", r["group"]) if r["group"] is not None else ("i", r["item_id"]) for r in rows]
    in_largest = {modes.get(u) for u, s in zip(unit_of, split) if s == largest}
    assert set(modes.values()) <= in_largest, f"{where}: a label has no unit in {largest}"


@pytest.mark.parametrize("fractions", [FRACTIONS, SSL_FRACTIONS], ids=["train-dev-test", "ssl"])
def test_random_catalogues_keep_every_property(fractions):
    for seed in range(20):
        items = random_catalogue(seed)
        check_properties(items, allocate(items, fractions, seed).to_list(), fractions, seed)


def test_one_large_group_per_label_does_not_pile_into_train():
    """Each label: 40 lone listings and one group of 20. Large groups must spread like the rest."""
    rows = []
    for label in range(40):
        rows += [{"item_id": f"{label}-{i}", "label": f"L{label}", "group": None} for i in range(40)]
        rows += [{"item_id": f"{label}-g{i}", "label": f"L{label}", "group": f"g{label}"} for i in range(20)]
    items = pl.DataFrame(rows, schema={"item_id": pl.Utf8, "label": pl.Utf8, "group": pl.Utf8})
    split = allocate(items, FRACTIONS, seed=3).to_list()
    groups_in = Counter(s for r, s in zip(rows, split) if r["group"] is not None and r["item_id"].endswith("-g0"))
    assert groups_in["train"] <= 30 and groups_in["dev"] >= 4 and groups_in["test"] >= 4, groups_in
    check_properties(items, split, FRACTIONS, seed=3)


def test_without_groups_each_label_is_split_to_within_one_item():
    for seed in range(10):
        items = random_catalogue(seed, groups=False)
        split = allocate(items, FRACTIONS, seed).to_list()
        by_label: dict[str | None, Counter] = defaultdict(Counter)
        for label, s in zip(items["label"].to_list(), split):
            by_label[label][s] += 1
        for label, counts in by_label.items():
            n = sum(counts.values())
            assert counts["train"] >= 1, label
            for name, share in FRACTIONS.items():
                assert abs(counts[name] - n * share) < 1.0 + 1e-9, (seed, label, dict(counts))


def test_same_seed_same_split_other_seed_other_split():
    items = random_catalogue(5)
    a, b, c = (allocate(items, FRACTIONS, s).to_list() for s in (0, 0, 1))
    assert a == b
    assert a != c


def test_take_fraction_keeps_every_label_whole_groups_and_the_other_splits():
    for seed in range(8):
        items = random_catalogue(seed)
        items = items.with_columns(split=allocate(items, FRACTIONS, seed))
        train = items.filter(pl.col("split") == "train")
        for fraction in (0.05, 0.25):
            cut = take_fraction(items, "train", fraction, seed + 1)
            kept = cut.filter(pl.col("split") == "train")
            assert cut.filter(pl.col("split") != "train").equals(items.filter(pl.col("split") != "train"))
            assert set(kept["item_id"]) <= set(train["item_id"])
            # whole groups: a kept group keeps every listing it had in train
            whole = train.drop_nulls("group").group_by("group").len()
            kept_groups = kept.drop_nulls("group").group_by("group").len()
            assert kept_groups.join(whole, on="group", suffix="_all").filter(pl.col("len") != pl.col("len_all")).height == 0
            # every label that had a unit in train keeps one
            _, modes = unit_sizes_and_modes(train)
            _, kept_modes = unit_sizes_and_modes(kept)
            assert set(modes.values()) <= set(kept_modes.values()), (seed, fraction)
            # about the fraction asked, plus at most one unit per label
            n_labels = len(set(modes.values()))
            assert kept.height >= 0.8 * fraction * train.height
            assert kept.height <= fraction * train.height + n_labels * 30 + 30
