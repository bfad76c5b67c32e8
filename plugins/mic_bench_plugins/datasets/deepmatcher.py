"""`deepmatcher`: the DeepMatcher / Magellan entity-matching layout.

A folder with tableA.csv and tableB.csv (an ``id`` column plus attributes such as title or
name, description, price) and train.csv, valid.csv, test.csv holding labelled pairs
(``ltable_id, rtable_id, label``). Items are tableA and tableB together; the same id may occur
in both tables, so item ids are prefixed ``a:`` and ``b:``. Pairs keep the benchmark's split
(valid becomes dev); items carry no split of their own.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from bench.data.checks import require_columns, resolve_user_path
from bench.errors import BenchError
from bench.data.pair_table import PAIR_SCHEMA
from bench.api.registry import PluginSpec

from .assemble import ColumnSources, MissingImages, finish_catalog, image_paths
from .image_lists import first_image
from .pair_labels import (CONFLICTING_PAIRS_HELP, CROSS_SPLIT_PAIRS_HELP, ConflictingPairs, CrossSplitPairs,
                          bad_label, join_text, parse_pair_label, resolve_repeated_pairs, serialize_attributes)
from .table_files import BadRows, csv_row_line, decode_text, read_table

SIDES = {"table_a": "a", "table_b": "b"}
PAIR_FILES = {"train": "train", "valid": "dev", "test": "test"}
TITLE_GUESSES = ("title", "name")


class DeepMatcherOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="the dataset folder; the five file options are relative to it "
                                               "(without it, give them as paths)")
    table_a: str = Field("tableA.csv", description="left table: id column plus attributes")
    table_b: str = Field("tableB.csv", description="right table: id column plus attributes")
    train: str = Field("train.csv", description="training pairs: ltable_id, rtable_id, label")
    valid: str | None = Field("valid.csv", description="validation pairs (the dev split); null: none")
    test: str = Field("test.csv", description="test pairs")
    title: str | list[str] | None = Field(None, description="attribute column(s) joined (by spaces) into the title; "
                                                            "default: title, else name")
    serialize: bool = Field(False, description="write the title as 'COL title VAL ... COL brand VAL ...' over the "
                                               "title columns (Ditto's serialization for transformer matchers); "
                                               "false: their values joined by spaces")
    id_column: str = Field("id", description="the id column of both tables")
    image: str | None = Field(None, description="an attribute column holding an image path (relative to images), or a "
                                                "list of paths such as [\"a.jpg\", \"b.jpg\"] (the first that exists)")
    images: str | None = Field(None, description="folder the image paths are relative to (default: the dataset folder)")
    missing_images: MissingImages = Field("error", description="error, skip (drop the item and its pairs) or blank")
    allow_outside_images: bool = Field(False, description="read image paths that lead outside the image folder")
    bad_rows: BadRows = Field("error", description="CSV rows with the wrong field count: error, skip or join_last")
    encoding: str = "utf-8"
    conflicting_pairs: ConflictingPairs = Field("error", description=CONFLICTING_PAIRS_HELP)
    cross_split_pairs: CrossSplitPairs = Field("error", description=CROSS_SPLIT_PAIRS_HELP)


def _path(opts: DeepMatcherOptions, option: str, root: Path | None) -> Path:
    return resolve_user_path(getattr(opts, option), option=option, relative_to=root)


def _title_columns(opts: DeepMatcherOptions, columns: list[str], file: str) -> list[str]:
    if opts.title is None:
        for guess in TITLE_GUESSES:
            if guess in columns:
                return [guess]
        raise BenchError(f"no title or name column; the columns are: {', '.join(columns)}", file=file, field="title",
                         fix="set title to the attribute column(s) that name the product, e.g. title: [brand, modelno]")
    wanted = [opts.title] if isinstance(opts.title, str) else list(opts.title)
    require_columns(columns, {f"title[{i}]": c for i, c in enumerate(wanted)}, file=file)
    return wanted


def read_side(path: Path, prefix: str, opts: DeepMatcherOptions) -> tuple[pl.DataFrame, dict]:
    """One table as items (prefixed ids, joined title, raw image value); duplicate ids refused."""
    frame, notes = read_table(path, fmt="csv", encoding=opts.encoding, bad_rows=opts.bad_rows)
    file = str(path)
    require_columns(frame.columns, {"id_column": opts.id_column, "image": opts.image}, file=file)
    columns = _title_columns(opts, frame.columns, file)
    ids = frame[opts.id_column].cast(pl.Utf8).str.strip_chars()
    empty = ids.is_null() | (ids == "")
    if empty.any():
        row = int(empty.arg_max())
        raise BenchError(f"{_line(path, row, opts)}: the row has no {opts.id_column}", file=file, field=opts.id_column,
                         fix="give every row an id (or remove the row)")
    dupes = ids.is_duplicated()
    if dupes.any():
        rows = dupes.arg_true().to_list()
        raise BenchError(f"duplicate id '{ids[rows[0]]}' ({_line(path, rows[0], opts)} and "
                         f"{_line(path, rows[1], opts)}; {len(set(ids.filter(dupes)))} duplicated id(s))", file=file,
                         field=opts.id_column, fix="give every row of the table its own id; pairs name rows by id")
    text_of = (lambda values: serialize_attributes(columns, values)) if opts.serialize else join_text
    titles = [text_of(list(values)) for values in zip(*(frame[c].to_list() for c in columns))]
    items = pl.DataFrame({"item_id": [f"{prefix}:{i}" for i in ids], "title": titles,
                          "image": frame[opts.image].to_list() if opts.image else [None] * frame.height},
                         schema={"item_id": pl.Utf8, "title": pl.Utf8, "image": pl.Utf8})
    return items, notes


def _line(path: Path, row: int, opts: DeepMatcherOptions) -> str:
    return csv_row_line(decode_text(path, opts.encoding), ",", row, opts.bad_rows)


def _item_line(item_id: str, sides: dict[str, Path], opts: DeepMatcherOptions) -> str:
    """The line of an item's row in its table (only for an error message)."""
    side, _, raw = item_id.partition(":")
    path = sides["table_a" if side == "a" else "table_b"]
    frame, _ = read_table(path, fmt="csv", encoding=opts.encoding, bad_rows=opts.bad_rows)
    ids = frame[opts.id_column].cast(pl.Utf8).str.strip_chars().to_list()
    return _line(path, ids.index(raw), opts)


def read_pairs(path: Path, split: str, known: set[str], opts: DeepMatcherOptions, sides: dict[str, Path]) -> pl.DataFrame:
    """One pair file as left_id, right_id, label, split, and each pair's file and row (``_file``,
    ``_row``: for messages about repeated pairs); bad labels and unknown ids refused by line."""
    frame, _ = read_table(path, fmt="csv", encoding=opts.encoding, bad_rows=opts.bad_rows)
    file = str(path)
    require_columns(frame.columns, {"ltable_id": "ltable_id", "rtable_id": "rtable_id", "label": "label"}, file=file)
    if frame.height == 0:
        option = next(o for o, s in PAIR_FILES.items() if s == split)
        raise BenchError("the pair file is empty: a header and no pair", file=file, field=option,
                         fix="point the option at the benchmark's pair file" +
                             ("; to run without dev pairs set valid: null" if option == "valid" else ""))
    left = frame["ltable_id"].cast(pl.Utf8).str.strip_chars().to_list()
    right = frame["rtable_id"].cast(pl.Utf8).str.strip_chars().to_list()
    raw_labels = frame["label"].to_list()
    labels = []
    for row, (lid, rid, value) in enumerate(zip(left, right, raw_labels)):
        where = lambda: _line(path, row, opts)  # noqa: E731 - only computed for an error
        if not lid or not rid:
            raise BenchError(f"{where()}: the pair lacks its ltable_id or rtable_id", file=file, field="ltable_id",
                             fix="give both ids of the pair (or remove the line)")
        label = parse_pair_label(value)
        if label is None:
            raise bad_label(value, file=file, where=where())
        labels.append(label)
        for side, value_id in (("a", lid), ("b", rid)):
            if f"{side}:{value_id}" not in known:
                table = sides["table_a" if side == "a" else "table_b"]
                column = "ltable_id" if side == "a" else "rtable_id"
                raise BenchError(f"{where()}: {column} {value_id} is not an id of {table.name}", file=file,
                                 field=column, fix=f"add the row to {table} or remove this pair")
    return pl.DataFrame({"left_id": [f"a:{v}" for v in left], "right_id": [f"b:{v}" for v in right],
                         "label": labels, "split": [split] * len(left), "_file": [file] * len(left),
                         "_row": list(range(len(left)))},
                        schema={**PAIR_SCHEMA, "_file": pl.Utf8, "_row": pl.Int64})


def load(opts: DeepMatcherOptions, ctx=None):
    root = resolve_user_path(opts.path, option="path", kind="folder") if opts.path else None
    sides = {option: _path(opts, option, root) for option in SIDES}
    parts, notes = [], {}
    for option, prefix in SIDES.items():
        items, side_notes = read_side(sides[option], prefix, opts)
        parts.append(items)
        notes.update({f"{option}_{k}": v for k, v in side_notes.items()})
    items = pl.concat(parts)
    known = set(items["item_id"].to_list())
    pairs = pl.concat([read_pairs(_path(opts, option, root), split, known, opts, sides)
                       for option, split in PAIR_FILES.items() if getattr(opts, option) is not None])
    pairs = resolve_repeated_pairs(pairs, notes, locate=lambda file, row: _line(Path(file), row, opts),
                                   conflicting=opts.conflicting_pairs, cross_split=opts.cross_split_pairs)
    source = str(sides["table_a"])
    has_images = opts.image is not None
    if has_images:
        base = resolve_user_path(opts.images, option="images", kind="folder", relative_to=root) if opts.images \
            else (root or sides["table_a"].parent)
        cells = [first_image(cell, base, file=str(sides["table_a" if item.startswith("a:") else "table_b"]),
                             field=opts.image, where=lambda item=item: _item_line(item, sides, opts))
                 for item, cell in zip(items["item_id"].to_list(), items["image"].to_list())]
        items = items.with_columns(pl.Series("image", image_paths(cells, folder=base, pattern=None,
                                                                  base=base, allow_outside=opts.allow_outside_images,
                                                                  ids=items["item_id"].to_list(), file=source,
                                                                  field=opts.image), dtype=pl.Utf8))
    return finish_catalog("deepmatcher", items, source=source, sources=ColumnSources(id=opts.id_column,
                          image=opts.image or "image"), notes=notes, missing_images=opts.missing_images,
                          has_images=has_images, pairs=pairs)


SPECS = [PluginSpec("dataset", "deepmatcher",
                    "DeepMatcher / Magellan pair-labelled matching (tableA/tableB + train/valid/test pairs): task pairs",
                    load, DeepMatcherOptions)]
