"""Labelled item pairs: the table a pair-labelled catalogue carries beside its items.

Entity-matching benchmarks (DeepMatcher, WDC Products) label pairs, not items: a pair of two
listings is a match (1) or not (0), and the benchmark splits the pairs into train / dev / test
while the items are shared. ``normalise_pairs`` checks such a table once, where the catalogue
is built, so every later step can rely on it.
"""
from __future__ import annotations

import hashlib

import polars as pl

from bench.errors import BenchError

PAIR_COLUMNS = ("left_id", "right_id", "label", "split")
PAIR_SCHEMA = {"left_id": pl.Utf8, "right_id": pl.Utf8, "label": pl.Int8, "split": pl.Utf8}
PAIR_SPLITS = ("train", "dev", "test")


def unordered_pair_key() -> list[pl.Expr]:
    """Columns _a, _b: the pair's two ids in sorted order, so (x, y) and (y, x) are one pair."""
    return [pl.min_horizontal("left_id", "right_id").alias("_a"), pl.max_horizontal("left_id", "right_id").alias("_b")]


def normalise_pairs(pairs: pl.DataFrame, item_ids: pl.Series, where: str) -> pl.DataFrame:
    """left_id, right_id (strings naming items), label (0/1, Int8) and split (train/dev/test).

    Refused: a missing column, an id that is not an item, a label other than 0/1, a split name
    outside train/dev/test, and one pair (in either order) listed in two splits or twice with
    two labels: a pair in train and in test would put a test answer into training."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise BenchError(f"the pair table lacks column(s) {', '.join(missing)}", file=where, field="pairs",
                         fix="give the catalogue's pairs the columns left_id, right_id, label, split")
    pairs = pairs.select(pl.col("left_id").cast(pl.Utf8), pl.col("right_id").cast(pl.Utf8),
                         pl.col("label"), pl.col("split").cast(pl.Utf8))
    nulls = pairs.filter(pl.any_horizontal(pl.all().is_null()))
    if nulls.height:
        raise BenchError(f"{nulls.height} pair(s) lack an id, a label or a split (e.g. {nulls.row(0)})", file=where,
                         field="pairs", fix="every pair needs both ids, a 0/1 label and its split")
    try:
        labels = pairs["label"].cast(pl.Int64, strict=True)
    except pl.exceptions.PolarsError:
        labels = None
    if labels is None or not labels.is_in([0, 1]).all():
        bad = pairs.filter(~pl.col("label").cast(pl.Utf8).is_in(["0", "1"]))["label"][0]
        raise BenchError(f"pair label '{bad}' is not 0 or 1", file=where, field="pairs.label",
                         fix="label 1 for a match, 0 for a non-match")
    pairs = pairs.with_columns(labels.cast(pl.Int8).alias("label"))
    bad_split = pairs.filter(~pl.col("split").is_in(PAIR_SPLITS))
    if bad_split.height:
        raise BenchError(f"unknown pair split '{bad_split['split'][0]}'", file=where, field="pairs.split",
                         fix=f"use one of: {', '.join(PAIR_SPLITS)}")
    unknown = pairs.filter(~pl.col("left_id").is_in(item_ids) | ~pl.col("right_id").is_in(item_ids))
    if unknown.height:
        row = unknown.row(0, named=True)
        raise BenchError(f"{unknown.height} pair(s) name an item the catalogue lacks (e.g. {row['left_id']} - "
                         f"{row['right_id']})", file=where, field="pairs", fix="every pair id must be an item id")
    keyed = pairs.with_columns(*unordered_pair_key())
    clash = keyed.group_by("_a", "_b").agg(pl.col("split").n_unique().alias("n_splits"),
                                           pl.col("label").n_unique().alias("n_labels"),
                                           pl.col("split").unique().sort().alias("splits"))
    leak = clash.filter(pl.col("n_splits") > 1)
    if leak.height:
        row = leak.row(0, named=True)
        raise BenchError(f"the pair {row['_a']} - {row['_b']} is in more than one split ({', '.join(row['splits'])}; "
                         f"{leak.height} such pair(s))", file=where, field="pairs.split",
                         fix="each pair belongs to one split: a pair in train and dev/test leaks the answer into training "
                             "(the deepmatcher and wdc_products readers settle this with cross_split_pairs)")
    conflict = clash.filter(pl.col("n_labels") > 1)
    if conflict.height:
        row = conflict.row(0, named=True)
        raise BenchError(f"the pair {row['_a']} - {row['_b']} is labelled both 0 and 1", file=where,
                         field="pairs.label", fix="keep one label per pair (the deepmatcher and wdc_products readers "
                                                  "settle this with conflicting_pairs)")
    return pairs


def pairs_digest(pairs: pl.DataFrame | None) -> str:
    """The pair table's content, for the catalogue fingerprint ("" when there is none)."""
    if pairs is None:
        return ""
    return hashlib.sha256(pairs.select(PAIR_COLUMNS).write_csv().encode("utf-8")).hexdigest()
