"""The Catalog: the one table every dataset plugin returns."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bench.errors import BenchError
from bench.api.interfaces import CLASSIFICATION, MATCHING, PAIRS
from bench.data.pair_table import normalise_pairs, pairs_digest

COLUMNS = ("item_id", "title", "image", "label", "group", "split")
SPLIT_NAMES = ("train", "dev", "test", "ssl")
SPLIT_ALIASES = {"val": "dev", "valid": "dev", "validation": "dev", "eval": "dev", "unlabeled": "ssl"}


@dataclass
class Catalog:
    """Items as a polars DataFrame with columns item_id, title, image (path or null),
    label, group and split (each may be null), plus what the data supports.

    ``notes`` carries counts a trial row should report (e.g. images skipped).
    ``label_paths`` (optional): each item's whole parsed category path, parts joined by "\x1f",
    so `bench data inspect` can show every level; never used for training.
    ``settings`` holds the dataset options that decide what encoders see without showing in the
    table (e.g. missing_images); they are part of the fingerprint, as are the bytes of every image.
    ``pairs`` (optional): labelled item pairs (left_id, right_id, label 0/1, split train/dev/test;
    bench/data/pair_table.py) for the pairs task; part of the fingerprint.
    """

    name: str
    items: pl.DataFrame
    source: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    label_paths: pl.Series | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    pairs: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        self.items = normalise_items(self.items, self.source or self.name)
        if self.pairs is not None:
            self.pairs = normalise_pairs(self.pairs, self.items["item_id"], self.source or self.name)
        if not self.fingerprint:
            self.fingerprint = content_fingerprint(self.items, self.settings, pairs=self.pairs)

    @property
    def tasks(self) -> frozenset[str]:
        """Task kinds this data supports: classification needs labels, matching needs groups,
        pairs needs labelled pairs in train and test."""
        kinds = set()
        if self.items["label"].drop_nulls().n_unique() >= 2:
            kinds.add(CLASSIFICATION)
        groups = self.items["group"].drop_nulls()
        if len(groups) and groups.value_counts()["count"].max() >= 2:
            kinds.add(MATCHING)
        if self.pairs is not None and {"train", "test"} <= set(self.pairs["split"].unique().to_list()):
            kinds.add(PAIRS)
        return frozenset(kinds)

    @property
    def label_names(self) -> list[str]:
        return sorted(self.items["label"].drop_nulls().unique().to_list())

    @property
    def has_images(self) -> bool:
        return self.items["image"].drop_nulls().len() > 0

    @property
    def has_titles(self) -> bool:
        return (self.items["title"].str.strip_chars() != "").any()


def normalise_items(items: pl.DataFrame, where: str) -> pl.DataFrame:
    """Add missing optional columns, cast all to strings, reject empty tables and duplicate ids."""
    if "item_id" not in items.columns or "title" not in items.columns:
        raise BenchError(
            f"the catalogue needs columns item_id and title; it has {', '.join(items.columns) or 'none'}",
            file=where, fix="map your id and title columns in the dataset options")
    if items.height == 0:
        raise BenchError("the catalogue is empty (no rows)", file=where,
                         fix="point the dataset at a file with at least a few items")
    exprs = [pl.col(c).cast(pl.Utf8) if c in items.columns else pl.lit(None, dtype=pl.Utf8).alias(c)
             for c in COLUMNS]
    items = items.select(exprs)
    items = items.with_columns(
        pl.col("title").fill_null(""),
        pl.col("split").str.to_lowercase().replace(SPLIT_ALIASES),
    )
    dupes = items.filter(pl.col("item_id").is_duplicated())["item_id"].unique().head(5).to_list()
    if dupes:
        raise BenchError(f"duplicate item ids, e.g. {', '.join(map(str, dupes))}", file=where,
                         field="item_id", fix="make ids unique or choose another id column")
    bad_splits = items.filter(pl.col("split").is_not_null() & ~pl.col("split").is_in(SPLIT_NAMES))
    if bad_splits.height:
        raise BenchError(
            f"unknown split value '{bad_splits['split'][0]}' (item {bad_splits['item_id'][0]})",
            file=where, field="split", fix=f"use one of: {', '.join(SPLIT_NAMES)} (or val/valid for dev)")
    return items


def content_fingerprint(items: pl.DataFrame, settings: dict[str, Any] | None = None,
                        cache_root: str | None = None, pairs: pl.DataFrame | None = None) -> str:
    """A hash of the table's text, the bytes of every image it names, and the settings that shape
    what encoders see: the cache key for everything derived from the catalogue.

    Each image enters by its content digest, not its path, so the same catalogue copied to another
    folder or cluster node has the same fingerprint, and a picture rewritten in place does not."""
    from bench.data.image_files import scan_images

    paths = items["image"].to_list()
    facts = scan_images([p for p in paths if p], cache_root=cache_root)
    contents = [None if not p else (facts[p].digest or "unreadable") for p in paths]
    digest = hashlib.sha256(items.with_columns(pl.Series("image", contents, dtype=pl.Utf8)).write_csv().encode("utf-8"))
    digest.update(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    if pairs is not None:  # a catalogue without pairs keeps the fingerprint it always had
        digest.update(pairs_digest(pairs).encode())
    return digest.hexdigest()[:16]
