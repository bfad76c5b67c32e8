"""What the pair-labelled readers (DeepMatcher, WDC Products) share: a label cell read as 0/1,
attribute values joined into a title, and the pairs the catalogue keeps.

Errors name the pair file and the line of the offending pair, so a messy export is fixed in
one look.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import polars as pl

from bench.errors import BenchError
from bench.data.pair_table import PAIR_COLUMNS, PAIR_SPLITS, unordered_pair_key

ConflictingPairs = Literal["error", "keep_first", "drop"]
CrossSplitPairs = Literal["error", "keep_later", "drop"]
CONFLICTING_PAIRS_HELP = ("one pair (in either order) listed with label 1 and label 0 in one split: error, keep_first "
                          "(the label of its first line), or drop (every line of it)")
CROSS_SPLIT_PAIRS_HELP = ("one pair listed in two splits (e.g. train and test, as when records with identical text "
                          "share an id): error, keep_later (only in its later split: test over dev over train, so "
                          "the evaluation pairs stay as published), or drop (from every split)")
SPLIT_ORDER = {split: rank for rank, split in enumerate(PAIR_SPLITS)}

TRUE_LABELS = {"1", "1.0", "true"}
FALSE_LABELS = {"0", "0.0", "false"}


def parse_pair_label(value) -> int | None:
    """A pair's label as 0/1 ("1", 1, 1.0, true; "0", 0, 0.0, false); None for anything else."""
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in TRUE_LABELS:
        return 1
    if text in FALSE_LABELS:
        return 0
    return None


def bad_label(value, *, file: str, where: str, field: str = "label") -> BenchError:
    shown = "(empty)" if value is None or str(value).strip() == "" else repr(value)
    return BenchError(f"{where}: the label {shown} is not 0 or 1", file=file, field=field,
                      fix="label each pair 1 (match) or 0 (non-match); relabel or remove this line")


def join_text(values: list) -> str:
    """Attribute values joined by spaces, nulls and blanks left out."""
    parts = []
    for value in values:
        if value is None:
            continue
        text = str(value).strip()
        if text and text.lower() != "nan":
            parts.append(text)
    return " ".join(parts)


def serialize_attributes(names: list[str], values: list) -> str:
    """Attribute values written as ``COL name VAL value ...`` (Ditto's serialization, Li et al.
    VLDB 2020): a transformer matcher then knows which words are the brand and which the model
    number. A blank or missing value keeps its ``COL name VAL`` with nothing after it, so both
    records of a pair show the same attribute names in the same order."""
    return " ".join(f"COL {name} VAL {join_text([value])}".rstrip() for name, value in zip(names, values))


def settle_pairs(pairs: pl.DataFrame, item_ids: pl.Series, notes: dict) -> pl.DataFrame:
    """The reader's pairs as its catalogue keeps them (``notes`` gains the counts). A pair listed
    again (in either order) with the same label in the same split is kept once (note
    duplicate_pairs_dropped), so no pair weighs twice in a metric; listed with another label or in
    another split, the catalogue refuses it. Pairs whose item was dropped (e.g. by
    missing_images: skip) go too (note dropped_pairs)."""
    unique = pairs.with_columns(*unordered_pair_key()).unique(subset=["_a", "_b", "label", "split"], keep="first",
                                                              maintain_order=True)
    duplicates = pairs.height - unique.height
    pairs = unique.drop("_a", "_b")
    kept = pairs.filter(pl.col("left_id").is_in(item_ids) & pl.col("right_id").is_in(item_ids))
    if duplicates:
        notes["duplicate_pairs_dropped"] = duplicates
    if kept.height < pairs.height:
        notes["dropped_pairs"] = pairs.height - kept.height
    for split in PAIR_SPLITS:
        notes[f"{split}_pairs"] = int((kept["split"] == split).sum())
    return kept.select(PAIR_COLUMNS)


def resolve_repeated_pairs(pairs: pl.DataFrame, notes: dict, *, locate: Callable[[str, int], str],
                           conflicting: ConflictingPairs = "error", cross_split: CrossSplitPairs = "error") -> pl.DataFrame:
    """Pairs listed more than once, settled as the reader's options say (``notes`` gains the counts).

    ``pairs`` holds the pair columns plus ``_file`` (the pair file) and ``_row`` (the pair's row in
    it); ``locate(file, row)`` gives that row's line for a message. A pair (in either order) in two
    splits is handled first (``cross_split``), then a pair labelled both 1 and 0 within a split
    (``conflicting``). An error names both lines. Repeats with one label in one split are left to
    ``settle_pairs``, which keeps them once."""
    keyed = pairs.with_row_index("_order").with_columns(*unordered_pair_key(),
                                                        pl.col("split").replace_strict(SPLIT_ORDER).alias("_rank"))
    crossing = keyed.filter(pl.col("split").n_unique().over("_a", "_b") > 1)
    if crossing.height:
        n = crossing.select("_a", "_b").n_unique()
        if cross_split == "error":
            first = crossing.filter((pl.col("_a") == crossing["_a"][0]) & (pl.col("_b") == crossing["_b"][0]))
            one, other = first.row(0, named=True), first.filter(pl.col("split") != first["split"][0]).row(0, named=True)
            raise BenchError(f"{_where(one, locate)} and {_where(other, locate)} list the pair {one['left_id']} - "
                             f"{one['right_id']}, in {one['split']} and in {other['split']} ({n} pair(s) in more than "
                             "one split)", file=other["_file"], field="cross_split_pairs",
                             fix="a pair in train and dev/test puts the answer into training: remove one line, or set "
                                 "cross_split_pairs: keep_later (keep it in its later split only) or drop")
        later = pl.col("_rank") == pl.col("_rank").max().over("_a", "_b")
        keyed = keyed.filter(later) if cross_split == "keep_later" else \
            keyed.filter(pl.col("split").n_unique().over("_a", "_b") == 1)
        notes[f"cross_split_pairs_{'kept_later' if cross_split == 'keep_later' else 'dropped'}"] = n
    clash = pl.col("label").n_unique().over("_a", "_b", "split") > 1
    conflicts = keyed.filter(clash)
    if conflicts.height:
        n = conflicts.select("_a", "_b", "split").n_unique()
        if conflicting == "error":
            first = conflicts.filter((pl.col("_a") == conflicts["_a"][0]) & (pl.col("_b") == conflicts["_b"][0])
                                     & (pl.col("split") == conflicts["split"][0]))
            one, other = first.row(0, named=True), first.filter(pl.col("label") != first["label"][0]).row(0, named=True)
            raise BenchError(f"{_where(one, locate)} labels the pair {one['left_id']} - {one['right_id']} "
                             f"{one['label']}, {_where(other, locate)} labels it {other['label']} ({n} pair(s) with "
                             "both labels)", file=other["_file"], field="conflicting_pairs",
                             fix="keep one label per pair: fix or remove one line, or set conflicting_pairs: "
                                 "keep_first (the first line's label) or drop (every line of the pair)")
        if conflicting == "keep_first":
            keyed = keyed.filter(pl.col("label") == pl.col("label").first().over("_a", "_b", "split"))
            notes["conflicting_pairs_kept_first"] = n
        else:
            keyed = keyed.filter(~clash)
            notes["conflicting_pairs_dropped"] = n
    return keyed.sort("_order").select(PAIR_COLUMNS)


def _where(row: dict, locate: Callable[[str, int], str]) -> str:
    return f"{Path(row['_file']).name} {locate(row['_file'], row['_row'])}"
