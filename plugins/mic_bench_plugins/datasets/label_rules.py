"""``min_items_per_label``: drop, merge or refuse labels too rare to train and test on.

Counted on the catalogue as loaded (after missing images and duplicate ids are dealt with),
and reported in the catalogue notes, so every trial row says how many labels and items the
rule removed (``data_dropped_rare_labels`` ..., 0 when none was rare).
"""
from __future__ import annotations

from typing import Callable

import polars as pl

from bench.data.checks import EXAMPLES, check_not_empty
from bench.errors import BenchError

LineOf = Callable[[int], str]


def _first_line(items: pl.DataFrame, label: str, line_of: LineOf | None) -> str:
    row = items.filter(pl.col("label") == label)["_source_row"][0] if "_source_row" in items.columns else None
    return f" ({line_of(row)})" if line_of is not None and row is not None else ""


def apply_min_items(items: pl.DataFrame, min_items: int | None, policy: str, other: str, *, file: str, column: str,
                    line_of: LineOf | None = None) -> tuple[pl.DataFrame, dict]:
    """Labels with fewer than ``min_items`` items: dropped (their items leave the catalogue),
    merged into ``other``, or an error naming the label, its count and the line of an item."""
    if min_items is None or items["label"].drop_nulls().len() == 0:
        return items, {}
    counts = items["label"].drop_nulls().value_counts().sort(["count", "label"])
    rare = counts.filter(pl.col("count") < min_items)
    if rare.height == 0:  # still said in the row: the rule ran and removed nothing
        kind = "merged" if policy == "other" else "dropped"
        return items, {f"{kind}_rare_labels": 0, f"{kind}_rare_label_items": 0}
    examples = ", ".join(f"'{n}' ({c})" for n, c in rare.head(EXAMPLES).iter_rows())
    if policy == "error":
        name, count = rare.row(0)
        raise BenchError(f"label '{name}' has {count} item{'s' * (count != 1)}{_first_line(items, name, line_of)}, "
                         f"under min_items_per_label: {min_items} ({rare.height} labels do: {examples})",
                         file=file, field=column,
                         fix="set rare_labels: drop (leave those items out) or rare_labels: other (merge them into "
                             "one label), or lower min_items_per_label")
    rare_names = rare["label"].to_list()
    n_items = int(rare["count"].sum())
    if policy == "other":
        kept = counts.filter(pl.col("count") >= min_items)["label"].to_list()
        if other in kept:
            raise BenchError(f"other_label '{other}' is already a label with enough items; merging rare labels into "
                             "it would mix them with a real class", file=file, field="other_label",
                             fix="set other_label to a name no label has, e.g. other_label: '(rare)'")
        merged = items.with_columns(pl.when(pl.col("label").is_in(rare_names)).then(pl.lit(other))
                                    .otherwise(pl.col("label")).alias("label"))
        return merged, {"merged_rare_labels": len(rare_names), "merged_rare_label_items": n_items}
    kept_items = items.filter(~pl.col("label").is_in(rare_names) | pl.col("label").is_null())
    check_not_empty(kept_items, file=file, after=f"dropping labels with fewer than {min_items} items "
                                                  "(min_items_per_label)")
    return kept_items, {"dropped_rare_labels": len(rare_names), "dropped_rare_label_items": n_items}


def check_labels_in_train(items: pl.DataFrame, *, file: str, column: str, min_items: int) -> None:
    """With a given split, every label kept must reach train, or it is tested but never learnt."""
    split_of = items.drop_nulls("label").group_by("label").agg(
        (pl.col("split") == "train").sum().alias("train"), pl.len().alias("n"),
        pl.col("split").drop_nulls().unique().sort().alias("splits"))
    untrained = split_of.filter(pl.col("train") == 0).sort("label")
    if untrained.height:
        name, _, n, splits = untrained.row(0)
        raise BenchError(f"label '{name}' keeps {n} item{'s' * (n != 1)} (min_items_per_label: {min_items}), all in "
                         f"{', '.join(splits) or 'no split'}, none in train ({untrained.height} labels are like this)",
                         file=file, field=column,
                         fix="raise min_items_per_label (or set rare_labels: other), or give those items a train "
                             "split in the split column / split file")
