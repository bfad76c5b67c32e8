"""What the pair-labelled readers (DeepMatcher, WDC Products) share: a label cell read as 0/1,
attribute values joined into a title, and the pairs the catalogue keeps.

Errors name the pair file and the line of the offending pair, so a messy export is fixed in
one look.
"""
from __future__ import annotations

import polars as pl

from bench.errors import BenchError
from bench.pair_table import PAIR_COLUMNS, PAIR_SPLITS, unordered_pair_key

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
