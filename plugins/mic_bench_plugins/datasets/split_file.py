"""A given split from a file (``item_id,split``), so a paper's or a colleague's split is
reproduced exactly.

The file is CSV (TSV when it ends in .tsv/.tab) with a header naming the columns ``item_id``
and ``split`` (other columns are ignored). Split values are those of a split column (train,
dev, test, ssl; val/valid/validation mean dev; case ignored). Decisions:
- an id listed twice, an empty or unknown split value, an id the catalogue does not have:
  errors naming the file, the line and how many such lines there are;
- catalogue items the file does not list: an error (default), or ``unlisted_items: drop``
  leaves them out and counts them as ``dropped_unlisted_items``;
- a product group split across the file's splits is an error (matching would leak).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bench.data.catalog import SPLIT_ALIASES, SPLIT_NAMES
from bench.data.checks import EXAMPLES, check_not_empty, resolve_user_path
from bench.errors import BenchError

from .table_files import FIELD_LIMIT, decode_text


@dataclass
class SplitFile:
    path: Path
    splits: dict[str, str]  # item id -> split name
    lines: dict[str, int]  # item id -> line in the file


def read_split_file(raw: str, *, relative_to: Path, source: str, encoding: str = "utf-8") -> SplitFile:
    path = resolve_user_path(raw, option="split_file", relative_to=relative_to, file=source)
    text = decode_text(path, encoding)
    where = str(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        if "item_id" not in header or "split" not in header:
            raise BenchError(f"the split file needs a header with columns item_id and split; it has "
                             f"{', '.join(header) or 'none'}", file=where, field="line 1",
                             fix="write the first line as: item_id,split")
        id_at, split_at = header.index("item_id"), header.index("split")
        splits: dict[str, str] = {}
        lines: dict[str, int] = {}
        bad: list[tuple[int, str]] = []
        start = reader.line_num + 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or all(f.strip() == "" for f in fields):
                continue
            if len(fields) <= max(id_at, split_at):
                raise BenchError(f"line {line} has {len(fields)} fields, the header {len(header)}", file=where,
                                 field=f"line {line}", fix="write every line as: item_id,split")
            item_id, value = fields[id_at].strip(), fields[split_at].strip().lower()
            if not item_id:
                raise BenchError(f"line {line} has no item id", file=where, field=f"line {line}",
                                 fix="give every line an item id, or delete the line")
            if item_id in splits:
                raise BenchError(f"item '{item_id}' is listed twice (lines {lines[item_id]} and {line})", file=where,
                                 field=f"line {line}", fix="list every item once")
            value = SPLIT_ALIASES.get(value, value)
            if value not in SPLIT_NAMES:
                bad.append((line, fields[split_at].strip()))
            splits[item_id], lines[item_id] = value, line
    except csv.Error as exc:
        raise BenchError(f"line {reader.line_num} cannot be parsed: {exc}", file=where,
                         field=f"line {reader.line_num}", fix="check the quoting of that line") from None
    finally:
        csv.field_size_limit(previous)
    if bad:
        line, value = bad[0]
        raise BenchError(f"unknown split value '{value}' on line {line} ({len(bad)} lines have an unknown or empty "
                         "split)", file=where, field=f"line {line}",
                         fix=f"use one of: {', '.join(SPLIT_NAMES)} (val/valid/validation mean dev)")
    if not splits:
        raise BenchError("the split file lists no items", file=where, fix="write one line item_id,split per item")
    return SplitFile(path, splits, lines)


def apply_split_file(items: pl.DataFrame, given: SplitFile, *, source: str, policy: str,
                     known_ids: set[str] = frozenset()) -> tuple[pl.DataFrame, dict]:
    """Set every item's split from the file. ``known_ids``: ids the reader left out on purpose
    (e.g. records without a title), which the file may list without an error."""
    where = str(given.path)
    present = set(items["item_id"].to_list())
    unknown = [i for i in given.splits if i not in present and i not in known_ids]
    if unknown:
        unknown.sort(key=given.lines.get)
        examples = ", ".join(f"'{i}' (line {given.lines[i]})" for i in unknown[:EXAMPLES])
        raise BenchError(f"{len(unknown)} item ids in the split file are not in the catalogue {source}, e.g. "
                         f"{examples}", file=where, field=f"line {given.lines[unknown[0]]}",
                         fix="use the split file made for this catalogue (same id column); rows the reader skipped "
                             "(bad_rows: skip, duplicate ids) are not in the catalogue either")
    split = items["item_id"].replace_strict(given.splits, default=None, return_dtype=pl.Utf8)
    unlisted = items.filter(split.is_null())
    notes = {}
    if unlisted.height:
        examples = ", ".join(unlisted["item_id"].head(EXAMPLES).to_list())
        if policy == "error":
            raise BenchError(f"{unlisted.height} of {items.height} catalogue items are not in the split file, e.g. "
                             f"{examples}", file=where, field="item_id",
                             fix="list every item in the split file, or set unlisted_items: drop to leave those "
                                 "items out")
        notes["dropped_unlisted_items"] = unlisted.height
    items = items.with_columns(split.alias("split")).filter(pl.col("split").is_not_null())
    check_not_empty(items, file=source, after="keeping only the items listed in the split file")
    return items, notes
