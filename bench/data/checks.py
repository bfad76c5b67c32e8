"""Checks shared by the dataset readers, each failing with a BenchError that names the file,
the column or row, and the fix.

They work on a polars frame that already has the catalogue's core columns (item_id, title,
image, label, group, split), so every reader reports the same problem in the same words.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import polars as pl

from bench.data.catalog import SPLIT_ALIASES, SPLIT_NAMES
from bench.errors import BenchError
from bench.trial.splits import check_groups_disjoint

MISSING_IMAGE_POLICIES = ("error", "skip", "blank")
EXAMPLES = 5


def resolve_user_path(raw: str | os.PathLike, *, option: str, kind: str = "file",
                      relative_to: Path | None = None, file: str | None = None) -> Path:
    """Find a file or folder the user named: absolute as given; relative to ``relative_to``
    (usually the table's folder) first, then to the working directory."""
    raw_path = Path(raw).expanduser()
    tried = [raw_path] if raw_path.is_absolute() else [Path.cwd() / raw_path]
    if not raw_path.is_absolute() and relative_to is not None:
        tried.insert(0, relative_to / raw_path)
    for candidate in tried:
        if (candidate.is_dir() if kind == "folder" else candidate.is_file()):
            return candidate.resolve()
    wrong_kind = [c for c in tried if c.exists()]
    if wrong_kind:
        from bench.data.file_reads import not_regular_reason

        odd = not_regular_reason(wrong_kind[0])
        if odd and kind == "file" and not wrong_kind[0].is_dir():  # a FIFO would block the reader, a device never end
            raise BenchError(f"{wrong_kind[0]} {odd}", file=file, field=option,
                             fix=f"set {option} to a regular file (FIFOs, devices and sockets are not read)")
        other = "a folder" if kind == "file" else "a file"
        raise BenchError(f"{wrong_kind[0]} is {other}, not a {kind}", file=file, field=option,
                         fix=f"set {option} to the {kind} itself")
    raise BenchError(f"{kind} not found: {raw} (looked in {', '.join(str(c) for c in tried)})",
                     file=file, field=option,
                     fix=f"check the spelling, or give an absolute path in the dataset option {option}")


def require_columns(present: Iterable[str], wanted: Mapping[str, str | None], *, file: str) -> None:
    """Every mapped column (option name -> column name) must exist; list those that do."""
    present = list(present)
    for option, column in wanted.items():
        if column is not None and column not in present:
            import difflib

            close = difflib.get_close_matches(column, present, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise BenchError(f"column '{column}' (from option {option}) is not in the table; "
                             f"its columns are: {', '.join(present) or '(none)'}",
                             file=file, field=option, fix=f"{hint}set {option} to one of the columns above")


def check_not_empty(frame: pl.DataFrame, *, file: str, after: str = "") -> None:
    if frame.height == 0:
        reason = f" after {after}" if after else ""
        raise BenchError(f"the table has no rows{reason}", file=file,
                         fix="point the dataset at a file with at least a few items"
                             + (f" (or revisit {after})" if after else ""))


def check_ids(items: pl.DataFrame, *, file: str, column: str, duplicates: str = "error") -> tuple[pl.DataFrame, int]:
    """Ids must be present and unique; ``duplicates="keep_first"`` drops repeats and counts them."""
    nulls = items.with_row_index("_row").filter(pl.col("item_id").is_null() | (pl.col("item_id") == ""))
    if nulls.height:
        rows = ", ".join(str(r + 1) for r in nulls["_row"].head(EXAMPLES).to_list())
        raise BenchError(f"{nulls.height} rows have no id (data rows {rows})", file=file, field=column,
                         fix="fill the id column, or leave the id mapping out to number the rows")
    dupes = items.filter(pl.col("item_id").is_duplicated())["item_id"].unique(maintain_order=True)
    if dupes.len() == 0:
        return items, 0
    if duplicates == "keep_first":
        kept = items.unique(subset="item_id", keep="first", maintain_order=True)
        return kept, items.height - kept.height
    raise BenchError(f"{dupes.len()} item ids occur more than once, e.g. {', '.join(dupes.head(EXAMPLES).to_list())}",
                     file=file, field=column,
                     fix="make the ids unique, map another id column, or set duplicate_ids: keep_first")


def image_exists_checker():
    """An existence test that lists each folder once (cheap for 100k images in one folder)."""
    listings: dict[str, set[str]] = {}

    def exists(path: str | None) -> bool:
        if not path:
            return False
        parent, name = os.path.split(path)
        names = listings.get(parent)
        if names is None:
            try:
                names = set(os.listdir(parent or "."))
            except OSError:
                names = set()
            listings[parent] = names
        return name in names

    return exists


def apply_missing_images(items: pl.DataFrame, policy: str, *, file: str, field: str) -> tuple[pl.DataFrame, dict]:
    """Find rows whose image is absent or is not a picture (empty, truncated, not an image, a
    canvas above the pixel limit); raise, drop them, or blank them as the policy says.

    Each file is decoded once per content: the verdict is kept with its digest in the image
    manifest (bench.data.image_files), so later loads only stat the files. A blanked row has no
    image; encoders give it the grey placeholder and the trial row counts it.
    """
    from bench.data.image_files import scan_images

    exists = image_exists_checker()
    paths = items["image"].to_list()
    found = [exists(p) for p in paths]
    facts = scan_images([p for p, ok in zip(paths, found) if ok], check=True)
    problems = [facts[p].problem if ok else None for p, ok in zip(paths, found)]
    missing = pl.Series([not ok for ok in found], dtype=pl.Boolean)
    unreadable = pl.Series([p is not None for p in problems], dtype=pl.Boolean)
    n_missing, n_unreadable = int(missing.sum()), int(unreadable.sum())
    if n_missing + n_unreadable == 0:
        return items, {}
    if policy == "error":
        parts = []
        if n_missing:
            examples = "; ".join(f"item {r['item_id']} ({r['image'] or 'no image given'})"
                                 for r in items.filter(missing).head(EXAMPLES).iter_rows(named=True))
            parts.append(f"{n_missing} of {items.height} images are missing, e.g. {examples}")
        if n_unreadable:
            bad = [(i, p, why) for i, p, why in zip(items["item_id"].to_list(), paths, problems) if why]
            examples = "; ".join(f"item {i} ({p} {why})" for i, p, why in bad[:EXAMPLES])
            parts.append(f"{n_unreadable} of {items.height} image files are not usable pictures, e.g. {examples}")
        raise BenchError("; ".join(parts), file=file, field=field,
                         fix="add or replace the files, or fix the images folder / pattern; or set missing_images: "
                             "skip (drop those rows) or missing_images: blank (train them on a grey placeholder, "
                             "counted in the row as n_image_placeholders)")
    bad = missing | unreadable
    if policy == "skip":
        kept = items.filter(~bad)
        check_not_empty(kept, file=file, after="dropping rows with missing or unreadable images (missing_images: skip)")
        notes = {"skipped_missing_images": n_missing, "skipped_unreadable_images": n_unreadable}
        return kept, {k: v for k, v in notes.items() if v}
    blanked = items.with_columns(pl.when(bad).then(None).otherwise(pl.col("image")).alias("image"))
    notes = {"blank_images": n_missing, "blank_unreadable_images": n_unreadable}
    return blanked, {k: v for k, v in notes.items() if v}


def inside_folder_checker(root: str | os.PathLike):
    """A test that a path stays inside ``root``: no ``..`` or absolute path leading out of it, and
    no symlink (of the file or a folder on the way) pointing out. Folders are resolved once."""
    root_text = os.path.normpath(os.path.abspath(root))
    real_root = os.path.realpath(root)
    real_dirs: dict[str, str] = {}

    def under(path: str, base: str) -> bool:
        return path == base or path.startswith(base.rstrip(os.sep) + os.sep)

    def inside(path: str) -> bool:
        norm = os.path.normpath(os.path.abspath(path))
        if not under(norm, root_text) and not under(norm, real_root):
            return False
        parent, name = os.path.split(norm)
        real_parent = real_dirs.get(parent)
        if real_parent is None:
            real_parent = real_dirs[parent] = os.path.realpath(parent)
        if not under(real_parent, real_root):
            return False
        full = os.path.join(real_parent, name)
        return not os.path.islink(full) or under(os.path.realpath(full), real_root)

    return inside


def check_images_inside(paths: list[str | None], root: str | os.PathLike, *, ids: list | None = None,
                        values: list | None = None, file: str | None = None, field: str = "image") -> None:
    """Refuse image paths that leave the dataset's image folder (``..``, absolute, symlinks):
    a table must not make a benchmark read files it does not own unless the user opts in."""
    inside = inside_folder_checker(root)
    outside = [i for i, p in enumerate(paths) if p and not inside(p)]
    if not outside:
        return
    first = outside[0]
    item = f"item {ids[first]}, " if ids is not None else ""
    given = values[first] if values is not None else paths[first]
    raise BenchError(f"{len(outside)} image paths lead outside the image folder {root}, e.g. {item}data row "
                     f"{first + 1}: '{given}' -> {os.path.realpath(paths[first])}", file=file, field=field,
                     fix="keep the images inside the image folder (no '..', absolute paths or symlinks out of it), "
                         "point the images option at a folder holding them all, or set allow_outside_images: true "
                         "in the dataset options if those files are meant to be read")


def check_label_classes(items: pl.DataFrame, *, file: str, column: str, level_hint: bool = False) -> None:
    """A label column the user asked for must hold at least two classes."""
    labels = items["label"].drop_nulls()
    if labels.len() == 0:
        raise BenchError(f"the label column '{column}' is empty for every item", file=file, field=column,
                         fix="map a column that holds the categories, or drop the label mapping for matching only")
    if labels.n_unique() < 2:
        deeper = " or a deeper label_level," if level_hint else ""
        raise BenchError(f"the label column '{column}' has one class only ('{labels[0]}'); "
                         "classification needs at least two", file=file, field=column,
                         fix=f"map another label column,{deeper} or drop the label mapping to use the data for matching")


def normalise_splits(items: pl.DataFrame, *, file: str, column: str) -> pl.DataFrame:
    """Lower-case split values, map val/valid/... to dev, and reject unknown ones naming the row."""
    items = items.with_columns(pl.col("split").str.strip_chars().str.to_lowercase().replace(SPLIT_ALIASES))
    bad = items.with_row_index("_row").filter(pl.col("split").is_not_null() & ~pl.col("split").is_in(SPLIT_NAMES))
    if bad.height:
        raise BenchError(f"unknown split value '{bad['split'][0]}' in data row {bad['_row'][0] + 1} "
                         f"(item {bad['item_id'][0]})", file=file, field=column,
                         fix=f"use one of: {', '.join(SPLIT_NAMES)} (val/valid/validation mean dev), "
                             "or leave the split mapping out to let mic-bench split")
    return items


def check_fixed_split_groups(items: pl.DataFrame, *, file: str) -> None:
    """A product group must stay inside one split, or matching scores leak."""
    check_groups_disjoint(items.filter(pl.col("split").is_not_null()), file)
