"""Split assignment: stratified by label and by group size, never splitting a group, seeded."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl

from bench.errors import BenchError

DEFAULT_FRACTIONS = {"train": 0.7, "dev": 0.15, "test": 0.15}


def _units(items: pl.DataFrame) -> pl.DataFrame:
    """One row per unit (a group, or an item without a group): its label and size."""
    unit = pl.coalesce(pl.concat_str([pl.lit("g:"), pl.col("group")]),
                       pl.concat_str([pl.lit("i:"), pl.col("item_id")]))
    return (items.with_columns(unit.alias("_unit"))
            .group_by("_unit", maintain_order=True)
            .agg(pl.col("label").drop_nulls().mode().sort().first().alias("_label"), pl.len().alias("_size")))


def size_bucket(size: int) -> int:
    """0 for a single listing, then one bucket per power of two: 2, 3-4, 5-8, 9-16 ..."""
    return 0 if size <= 1 else int(size - 1).bit_length()


def _label_order(by_bucket: dict[int, list[int]], rng: np.random.Generator) -> list[int]:
    """One label's units: one of its smallest first (it goes to the largest split, so the label
    is learnable at the cost of the fewest items), then the rest by size bucket, largest first,
    shuffled within each bucket."""
    shuffled = {}
    for bucket in sorted(by_bucket):
        members = np.array(by_bucket[bucket])
        rng.shuffle(members)
        shuffled[bucket] = members.tolist()
    smallest = min(shuffled)
    first = shuffled[smallest].pop(0)
    return [first] + [idx for bucket in sorted(shuffled, reverse=True) for idx in shuffled[bucket]]


def allocate(items: pl.DataFrame, fractions: dict[str, float], seed: int, stratify: bool = True,
             first_split: str | None = None) -> pl.Series:
    """Return a split name per item.

    Units (groups, or single items) are taken label by label (largest units first, shuffled
    within each size bucket) and each goes to the split furthest below its share of items, counted
    twice: within the unit's label (stratification) and within its size bucket across all labels
    (so singletons and large groups land in every split in proportion instead of piling into the
    largest one). Each label's first unit, one of its smallest, goes to ``first_split`` (default:
    the largest split), so every label is represented there. Without groups every unit is one item
    and only the label count applies.
    """
    total = sum(fractions.values())
    if total <= 0:
        raise BenchError("split fractions must add up to more than 0", field="splits.fractions")
    names = list(fractions)
    shares = np.array([fractions[n] / total for n in names])
    first = names.index(first_split) if first_split is not None else int(np.argmax(shares))
    units = _units(items)
    rng = np.random.default_rng(seed)
    sizes = units["_size"].to_numpy()
    buckets = [size_bucket(int(s)) for s in sizes]
    strata: dict[object, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    keys = units["_label"].to_list() if stratify else [None] * units.height
    for idx, key in enumerate(keys):
        strata[key][buckets[idx]].append(idx)
    balance_sizes = bool(units.height) and int(sizes.max()) > 1
    bucket_filled: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(len(names)))
    chosen = np.empty(units.height, dtype=np.int64)
    for key in sorted(strata, key=lambda k: (k is None, str(k))):
        label_filled = np.zeros(len(names))
        for idx in _label_order(strata[key], rng):
            size, bucket = sizes[idx], buckets[idx]
            if not label_filled.sum():
                pick = first
            else:
                deficit = shares * (label_filled.sum() + size) - label_filled
                if balance_sizes:
                    filled = bucket_filled[bucket]
                    deficit = deficit + shares * (filled.sum() + size) - filled
                pick = int(np.argmax(deficit))
            chosen[idx] = pick
            label_filled[pick] += size
            bucket_filled[bucket][pick] += size
    unit_split = dict(zip(units["_unit"].to_list(), [names[i] for i in chosen]))
    unit_col = items.select(pl.coalesce(pl.concat_str([pl.lit("g:"), pl.col("group")]),
                                        pl.concat_str([pl.lit("i:"), pl.col("item_id")])))
    return pl.Series("split", [unit_split[u] for u in unit_col.to_series().to_list()], dtype=pl.Utf8)


def assign_splits(items: pl.DataFrame, fractions: dict[str, float] | None, seed: int,
                  use_given: bool | None = None, source: str = "") -> pl.DataFrame:
    """Use the catalogue's own split column when it is complete (or asked to), else make one."""
    given = items["split"].null_count() == 0
    if use_given or (use_given is None and given and fractions is None):
        if not given:
            raise BenchError("splits.use_given is set but some items have no split value", file=source,
                             field="split", fix="fill the split column for every row or drop use_given")
        check_groups_disjoint(items, source)
        return items
    return items.with_columns(allocate(items, fractions or DEFAULT_FRACTIONS, seed))


def check_groups_disjoint(items: pl.DataFrame, source: str = "") -> None:
    shared = (items.drop_nulls("group").group_by("group").agg(pl.col("split").n_unique().alias("n"))
              .filter(pl.col("n") > 1))
    if shared.height:
        raise BenchError(
            f"group '{shared['group'][0]}' appears in more than one split ({shared.height} groups do)",
            file=source, field="split",
            fix="keep every listing of a product in one split, or let mic-bench make the splits")


def cap_splits(items: pl.DataFrame, cap: int | None, seed: int) -> pl.DataFrame:
    """Keep at most ``cap`` items per split, by whole groups (for smoke and CI runs)."""
    if not cap:
        return items
    parts = []
    for split_name in sorted(items["split"].unique().to_list()):
        part = items.filter(pl.col("split") == split_name)
        if part.height <= cap:
            parts.append(part)
            continue
        keep = allocate(part, {"keep": cap / part.height, "drop": 1 - cap / part.height}, seed)
        parts.append(part.filter(keep == "keep").head(cap))
    return pl.concat(parts)


def take_fraction(items: pl.DataFrame, split_name: str, fraction: float, seed: int) -> pl.DataFrame:
    """Keep ``fraction`` of one split (stratified, whole groups); other splits untouched.

    Every label of the split keeps at least one unit (one of its smallest), so a small fraction
    may keep a few more items than asked; the trial row records the count (n_train).
    """
    if fraction >= 1.0:
        return items
    if not 0 < fraction < 1:
        raise BenchError(f"fraction must be in (0, 1], got {fraction}", field="finetune_fraction")
    part = items.filter(pl.col("split") == split_name)
    keep = allocate(part, {"keep": fraction, "drop": 1 - fraction}, seed, first_split="keep")
    return pl.concat([items.filter(pl.col("split") != split_name), part.filter(keep == "keep")])
