"""The last steps every dataset reader shares: image paths, checks, and the Catalog.

A reader turns its own format into a frame with the core columns (item_id, title, image,
label, group, split), then calls ``finish_catalog`` so ids, images, labels and splits are
checked, and reported, the same way for every format.
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from bench.data.catalog import COLUMNS, Catalog
from bench.data.checks import (resolve_user_path, apply_missing_images, check_images_inside, check_fixed_split_groups, check_ids, check_label_classes,
                               check_not_empty, normalise_splits)
from bench.errors import BenchError

from .category_paths import looks_like_list
from .image_lists import first_image
from .label_rules import LineOf, apply_min_items, check_labels_in_train
from .pair_labels import settle_pairs
from .split_file import apply_split_file, read_split_file

MissingImages = Literal["error", "skip", "blank"]
ALLOW_OUTSIDE_HELP = "read image paths that lead outside the image folder ('..', absolute paths, symlinks)"
DuplicateIds = Literal["error", "keep_first"]


class ImageFolderOptions(BaseModel):
    """The image options every reader with an image folder shares."""

    missing_images: MissingImages = Field("error", description="error, skip (drop rows) or blank (grey image)")
    allow_outside_images: bool = Field(False, description=ALLOW_OUTSIDE_HELP)


def with_image_paths(items: pl.DataFrame, values: list, *, folder: Path | None, pattern: str | None, base: Path,
                     allow_outside: bool, file: str, field: str) -> pl.DataFrame:
    """``items`` with its image column set to ``image_paths(values, ...)`` (ids from its item_id column)."""
    paths = image_paths(values, folder=folder, pattern=pattern, base=base, allow_outside=allow_outside,
                        ids=items["item_id"].to_list(), file=file, field=field)
    return items.with_columns(pl.Series("image", paths, dtype=pl.Utf8))


def image_paths(values: list, *, folder: Path | None, pattern: str | None, base: Path,
                allow_outside: bool = False, ids: list | None = None, file: str | None = None,
                field: str = "image") -> list[str | None]:
    """Absolute image paths from column values: an absolute path, a path relative to the image
    folder (or the table's folder), or an id turned into a file name by ``pattern`` ("{}.jpg").

    A cell holding a JSON or Python list literal of names (scraped dumps write them) takes the
    first listed file that exists (``image_lists.first_image``). Paths must stay inside that folder
    (see ``check_images_inside``) unless ``allow_outside``.
    """
    root = str(folder or base)
    out: list[str | None] = []
    for i, value in enumerate(values):
        name = None if value is None else str(value).strip()
        if name and not pattern and looks_like_list(name):  # ["a.jpg", "b.jpg"]: the first that exists
            name = first_image(name, Path(root), file=file or "", field=field,
                               where=lambda i=i: f"item {ids[i]}" if ids else f"data row {i + 1}")
        if not name:
            out.append(None)
            continue
        name = pattern.format(name) if pattern else name
        out.append(name if os.path.isabs(name) else os.path.join(root, name))
    if not allow_outside:
        check_images_inside(out, root, ids=ids, values=values, file=file, field=field)
    return out


def check_pattern(pattern: str | None, *, file: str | None = None) -> None:
    if pattern is None:
        return
    fix = 'write it like "{}.jpg" or "images/{}.png" (one {} for the id; double other braces: {{ }})'
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        raise BenchError(f"image_pattern '{pattern}' is not a valid pattern ({exc})", file=file, field="image_pattern",
                         fix=fix) from None
    if not fields:
        raise BenchError(f"image_pattern '{pattern}' has no {{}} for the id", file=file, field="image_pattern", fix=fix)
    if fields != [""]:
        raise BenchError(f"image_pattern '{pattern}' has {len(fields)} fields ({', '.join('{' + f + '}' for f in fields)}); "
                         "it takes exactly one {} for the id", file=file, field="image_pattern", fix=fix)


@dataclass
class ColumnSources:
    """Where the core columns came from, so messages name the user's own columns.

    ``label`` / ``split`` are set only when the user asked for them (then they are checked);
    ``label_levels`` says a label_level option exists, so a one-class error can suggest it.
    """

    id: str = "item_id"
    image: str = "image"
    label: str | None = None
    split: str | None = None
    label_levels: bool = False


def finish_catalog(name: str, frame: pl.DataFrame, *, source: str, sources: ColumnSources, notes: dict | None = None,
                   missing_images: MissingImages = "error", has_images: bool = True,
                   duplicate_ids: DuplicateIds = "error", label_source: str | None = None,
                   options: BaseModel | None = None, line_of: LineOf | None = None,
                   known_ids: set[str] = frozenset(), pairs: pl.DataFrame | None = None) -> Catalog:
    """Check a frame of core columns and wrap it as a Catalog (notes carry skip counts).

    ``options``: the reader's options; the shared ones (split_file, min_items_per_label ...) are
    applied here. ``line_of``: the file line of a frame row, for errors about one item. A
    ``_label_path`` column (whole category paths) becomes ``Catalog.label_paths``. ``pairs``:
    labelled pairs of a pair-labelled reader, settled against the items kept (``settle_pairs``).
    """
    notes = dict(notes or {})
    extra = [c for c in ("_label_path",) if c in frame.columns]
    if "_source_row" not in frame.columns:
        frame = frame.with_row_index("_source_row")
    items = frame.select(
        [pl.col(c).cast(pl.Utf8) if c in frame.columns else pl.lit(None, dtype=pl.Utf8).alias(c) for c in COLUMNS]
        + [pl.col("_source_row"), *map(pl.col, extra)])
    check_not_empty(items, file=source)
    items, dropped = check_ids(items, file=source, column=sources.id, duplicates=duplicate_ids)
    if dropped:
        notes["dropped_duplicate_ids"] = dropped
    split_file = getattr(options, "split_file", None)
    split_where = sources.split
    if split_file is not None:
        if sources.split is not None:
            raise BenchError(f"both a split column ({sources.split}) and split_file are given", file=source,
                             field="split_file", fix="keep one of them")
        given = read_split_file(split_file, relative_to=Path(source).parent, source=source,
                                encoding=getattr(options, "encoding", "utf-8"))
        items, split_notes = apply_split_file(items, given, source=source, policy=options.unlisted_items,
                                              known_ids=known_ids)
        notes.update(split_notes)
        split_where = str(given.path)
    if has_images:
        items, image_notes = apply_missing_images(items, missing_images, file=source, field=sources.image)
        notes.update(image_notes)
    if split_where is not None:
        items = normalise_splits(items, file=source, column=split_where)
        check_fixed_split_groups(items, file=split_where if split_file is not None else source)
    min_items = getattr(options, "min_items_per_label", None)
    if sources.label is not None:
        items, label_notes = apply_min_items(items, min_items, options.rare_labels if min_items else "drop",
                                             getattr(options, "other_label", "other"), file=label_source or source,
                                             column=sources.label, line_of=line_of)
        notes.update(label_notes)
        _check_classes(items, file=label_source or source, sources=sources, min_items=min_items)
        if min_items is not None and split_where is not None and items["split"].null_count() == 0:
            check_labels_in_train(items, file=split_where if split_file is not None else source,
                                  column=sources.label, min_items=min_items)
    paths = items["_label_path"] if "_label_path" in items.columns else None
    settings = {"missing_images": missing_images} if has_images else {}
    if pairs is not None:
        pairs = settle_pairs(pairs, items["item_id"], notes)
    return Catalog(name=name, items=items.select(COLUMNS), source=source, notes=notes, label_paths=paths,
                   settings=settings, pairs=pairs)


def _check_classes(items: pl.DataFrame, *, file: str, sources: ColumnSources, min_items: int | None) -> None:
    try:
        check_label_classes(items, file=file, column=sources.label, level_hint=sources.label_levels)
    except BenchError as exc:
        if min_items is None:
            raise
        raise BenchError(f"{exc.message} (after min_items_per_label: {min_items})", file=exc.file, field=exc.field,
                         fix=f"lower min_items_per_label or set rare_labels: other; or {exc.fix}") from None


def locate_files(path: str, table_option: str, table_name: str, images: str | None) -> tuple[Path, Path, Path | None]:
    """(dataset folder, table file, image folder) from a dataset folder or the table file itself.

    ``path`` may name the folder the dataset was unpacked into (the table is then
    ``table_name`` inside it) or the table file; ``images`` is relative to that folder
    (null: a catalogue without pictures, the folder is None).
    """
    if Path(path).expanduser().is_dir():
        root = resolve_user_path(path, option="path", kind="folder")
        table = resolve_user_path(table_name, option=table_option, relative_to=root)
    else:
        table = resolve_user_path(path, option="path")
        root = table.parent
    if images is None:
        return root, table, None
    folder = resolve_user_path(images, option="images", kind="folder", relative_to=root, file=str(table))
    return root, table, folder

