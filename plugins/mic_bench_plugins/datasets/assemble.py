"""The last steps every dataset reader shares: image paths, checks, and the Catalog.

A reader turns its own format into a frame with the core columns (item_id, title, image,
label, group, split), then calls ``finish_catalog`` so ids, images, labels and splits are
checked, and reported, the same way for every format.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from bench.catalog import COLUMNS, Catalog
from bench.data_checks import (resolve_user_path, apply_missing_images, check_images_inside, check_fixed_split_groups, check_ids, check_label_classes,
                               check_not_empty, normalise_splits)
from bench.errors import BenchError

MissingImages = Literal["error", "skip", "blank"]
ALLOW_OUTSIDE_HELP = "read image paths that lead outside the image folder ('..', absolute paths, symlinks)"
DuplicateIds = Literal["error", "keep_first"]


def image_paths(values: list, *, folder: Path | None, pattern: str | None, base: Path,
                allow_outside: bool = False, ids: list | None = None, file: str | None = None,
                field: str = "image") -> list[str | None]:
    """Absolute image paths from column values: an absolute path, a path relative to the image
    folder (or the table's folder), or an id turned into a file name by ``pattern`` ("{}.jpg").

    Paths must stay inside that folder (see ``check_images_inside``) unless ``allow_outside``.
    """
    root = str(folder or base)
    out: list[str | None] = []
    for value in values:
        if value is None or str(value).strip() == "":
            out.append(None)
            continue
        name = pattern.format(str(value).strip()) if pattern else str(value).strip()
        out.append(name if os.path.isabs(name) else os.path.join(root, name))
    if not allow_outside:
        check_images_inside(out, root, ids=ids, values=values, file=file, field=field)
    return out


def check_pattern(pattern: str | None, *, file: str | None = None) -> None:
    if pattern is not None and "{}" not in pattern:
        raise BenchError(f"image_pattern '{pattern}' has no {{}} for the id", file=file, field="image_pattern",
                         fix='write it like "{}.jpg" or "images/{}.png"')


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
                   duplicate_ids: DuplicateIds = "error", label_source: str | None = None) -> Catalog:
    """Check a frame of core columns and wrap it as a Catalog (notes carry skip counts)."""
    notes = dict(notes or {})
    items = frame.select([pl.col(c).cast(pl.Utf8) if c in frame.columns else pl.lit(None, dtype=pl.Utf8).alias(c)
                          for c in COLUMNS])
    check_not_empty(items, file=source)
    items, dropped = check_ids(items, file=source, column=sources.id, duplicates=duplicate_ids)
    if dropped:
        notes["dropped_duplicate_ids"] = dropped
    if has_images:
        items, image_notes = apply_missing_images(items, missing_images, file=source, field=sources.image)
        notes.update(image_notes)
    if sources.label is not None:
        check_label_classes(items, file=label_source or source, column=sources.label, level_hint=sources.label_levels)
    if sources.split is not None:
        items = normalise_splits(items, file=source, column=sources.split)
        check_fixed_split_groups(items, file=source)
    settings = {"missing_images": missing_images} if has_images else {}
    return Catalog(name=name, items=items, source=source, notes=notes, settings=settings)


def locate_files(path: str, table_option: str, table_name: str, images: str) -> tuple[Path, Path, Path]:
    """(dataset folder, table file, image folder) from a dataset folder or the table file itself.

    ``path`` may name the folder the dataset was unpacked into (the table is then
    ``table_name`` inside it) or the table file; ``images`` is relative to that folder.
    """
    if Path(path).expanduser().is_dir():
        root = resolve_user_path(path, option="path", kind="folder")
        table = resolve_user_path(table_name, option=table_option, relative_to=root)
    else:
        table = resolve_user_path(path, option="path")
        root = table.parent
    folder = resolve_user_path(images, option="images", kind="folder", relative_to=root, file=str(table))
    return root, table, folder

