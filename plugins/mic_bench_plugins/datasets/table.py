"""`table`: a user's own catalogue — one CSV, TSV, Parquet or JSON-lines file, an image
folder, and a mapping from the file's columns to the catalogue's.

Example options::

    path: data/products.csv
    images: data/images            # image column values are relative to this folder
    columns: {id: sku, title: name, image: photo, label: category}
    text_columns: [description]    # appended to the title
    label_level: 2                 # "Beauty > Makeup > Lips" -> "Beauty > Makeup"
    missing_images: skip
"""
from __future__ import annotations

import json

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from bench.data.checks import require_columns, resolve_user_path
from bench.api.registry import PluginSpec

from bench.errors import BenchError

from .assemble import ColumnSources, DuplicateIds, ImageFolderOptions, check_pattern, finish_catalog, with_image_paths
from .catalog_options import GivenSplitOptions, PathLabelOptions
from .category_paths import category_columns
from .table_files import BadRows, Format, read_table, row_line
from .text_fields import as_text, join_text, strip_html


class ColumnMap(BaseModel):
    """Which of the file's columns hold each catalogue field (null = not in the file)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, description="unique item id; null = number the rows")
    title: str | None = Field("title", description="product title; null for a catalogue of images only")
    image: str | None = Field(None, description="image file: absolute, relative to `images`, "
                                                  "or an id for image_pattern")
    label: str | None = Field(None, description="category label or category path (plain, or a JSON / Python "
                                                  "list literal)")
    group: str | None = Field(None, description="product group id for matching")
    split: str | None = Field(None, description="train / dev / test / ssl (val, valid -> dev); null = split later")


# How exports spell a missing value (pandas' defaults): read as missing in id, label, group and split
# cells, never as a class called "NaN" or a product group "null".
MISSING_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                  "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


class TableOptions(PathLabelOptions, GivenSplitOptions, ImageFolderOptions):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the table file")
    format: Format = Field("auto", description="auto (from the extension), csv, tsv, parquet or jsonl")
    encoding: str = Field("utf-8", description="text encoding of CSV/TSV/JSON files, e.g. latin-1")
    separator: str | None = Field(None, min_length=1, max_length=1,
                                  description="CSV field separator, one character (default , for csv and tab for tsv)")
    bad_rows: BadRows = Field("error", description="rows with the wrong number of fields: error, skip, or "
                                                   "join_last (extra separators belong to the last column)")
    columns: ColumnMap = Field(default_factory=ColumnMap)
    text_columns: list[str] = Field(default_factory=list, description="columns appended to the title text")
    text_separator: str = Field(" ", description="put between the title and each text column")
    strip_html: bool = Field(False, description="remove HTML tags and entities from title and text columns")
    images: str | None = Field(None, description="image folder (relative: to the table's folder, else the working dir)")
    image_pattern: str | None = Field(None, description='file name from the image column or the id, e.g. "{}.jpg"')
    label_separator: str = Field(">", min_length=1, description="separator of hierarchical labels, e.g. > or >> "
                                                                "(several characters are one separator)")
    missing_values: list[str] = Field(list(MISSING_VALUES), description=(
        "cells read as missing in the id, label, group and split columns (after stripping spaces): pandas' list "
        "(NA, N/A, NaN, null, None, ...) by default; [] keeps such words as values (an empty cell is always missing)"))
    duplicate_ids: DuplicateIds = Field("error", description="error, or keep_first (drop later repeats)")
    name: str | None = Field(None, description="catalogue name (default: the file name)")


def load(opts: TableOptions, ctx=None):
    """Read the table, map its columns, check ids, images, labels and splits."""
    path = resolve_user_path(opts.path, option="path")
    source = str(path)
    check_pattern(opts.image_pattern, file=source)
    frame, notes = read_table(path, fmt=opts.format, encoding=opts.encoding, separator=opts.separator,
                              bad_rows=opts.bad_rows)
    cols = opts.columns
    wanted = {f"columns.{k}": v for k, v in cols.model_dump().items()}
    wanted.update({f"text_columns[{i}]": c for i, c in enumerate(opts.text_columns)})
    require_columns(frame.columns, wanted, file=source)
    folder = resolve_user_path(opts.images, option="images", kind="folder", relative_to=path.parent,
                               file=source) if opts.images else None
    items = frame.select(_core_columns(frame, opts)).with_row_index("_source_row")  # rows of the file, for errors

    def line_of(row: int) -> str:
        return row_line(path, row, fmt=opts.format, encoding=opts.encoding, separator=opts.separator,
                        bad_rows=opts.bad_rows)

    if cols.label:
        items, label_notes = _labels(items, opts, source=source, line_of=line_of)
        notes.update(label_notes)
    has_images = cols.image is not None or (folder is not None and opts.image_pattern is not None)
    if has_images:
        raw = items["image"] if cols.image is not None else items["item_id"]
        items = with_image_paths(items, raw.to_list(), folder=folder, pattern=opts.image_pattern, base=path.parent,
                                 allow_outside=opts.allow_outside_images, file=source,
                                 field=f"columns.image ({cols.image})" if cols.image else "image_pattern")
    sources = ColumnSources(id=f"columns.id ({cols.id})" if cols.id else "row number",
                            image=f"columns.image ({cols.image})" if cols.image else "image_pattern",
                            label=cols.label, split=cols.split, label_levels=opts.label_level is not None)
    return finish_catalog(opts.name or path.name, items, source=source, sources=sources, notes=notes,
                          missing_images=opts.missing_images, has_images=has_images, duplicate_ids=opts.duplicate_ids,
                          options=opts, line_of=line_of)


def _labels(items: pl.DataFrame, opts: TableOptions, *, source: str, line_of) -> tuple[pl.DataFrame, dict]:
    """Parse the label cells as category paths; a cell that is no path stops loading with its
    line, or (bad_rows: skip) its row is dropped and counted."""
    cells = items["label"]
    labels, paths, bad = category_columns(cells, opts.label_separator, opts.label_level, opts.label_form,
                                          as_written=True)
    items = items.with_columns(labels, paths)
    if not bad:
        return items, {}
    is_bad = cells.is_in(list(bad))
    if opts.bad_rows != "skip":
        row = int(is_bad.arg_true()[0])
        cell = cells[row]
        shown = cell if len(cell) <= 80 else cell[:77] + "..."
        raise BenchError(f"the category cell {shown!r} in column '{opts.columns.label}' is not a category path: "
                         f"{bad[cell]} ({int(is_bad.sum())} rows have such cells)", file=source, field=line_of(row),
                         fix="write the cell as a JSON list of strings (e.g. [\"Home >> Decor\"]) or a plain path "
                             "(Home >> Decor); or set bad_rows: skip to drop such rows")
    return items.filter(~is_bad), {"skipped_bad_label_cells": int(is_bad.sum())}


def _core_columns(frame: pl.DataFrame, opts: TableOptions) -> list[pl.Expr]:
    cols = opts.columns
    clean = strip_html if opts.strip_html else (lambda e: e)
    title_parts = [clean(as_text(frame, c)) for c in [cols.title, *opts.text_columns] if c is not None]
    missing = set(opts.missing_values) | {""}

    def present(expr: pl.Expr) -> pl.Expr:  # NaN, NA, null ... are no id, class, group or split
        return pl.when(expr.is_in(list(missing))).then(None).otherwise(expr)

    exprs = [
        (present(as_text(frame, cols.id).str.strip_chars()) if cols.id else
         pl.int_range(pl.len()).cast(pl.Utf8)).alias("item_id"),
        (join_text(title_parts, opts.text_separator).fill_null("") if title_parts else pl.lit("")).alias("title"),
    ]
    if cols.image:
        exprs.append(as_text(frame, cols.image).alias("image"))
    if cols.label:
        label = _label_text(frame, cols.label).str.strip_chars()
        exprs.append(present(label).alias("label"))
    if cols.group:
        group = as_text(frame, cols.group).str.strip_chars()
        exprs.append(present(group).alias("group"))
    if cols.split:
        split = as_text(frame, cols.split).str.strip_chars()
        exprs.append(present(split).alias("split"))
    return exprs


def _label_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A label column as text; a list column (JSON lines, Parquet) becomes its JSON list form so the
    path parser reads its parts, not a space-joined string."""
    if isinstance(frame.schema[column], (pl.List, pl.Array)):
        return pl.col(column).map_elements(lambda v: json.dumps(v.to_list(), ensure_ascii=False), return_dtype=pl.Utf8,
                                           skip_nulls=True)
    return as_text(frame, column)


SPECS = [PluginSpec("dataset", "table",
                    "your own catalogue: a CSV/TSV/Parquet/JSON-lines file, an image folder and a column mapping",
                    load, TableOptions)]
