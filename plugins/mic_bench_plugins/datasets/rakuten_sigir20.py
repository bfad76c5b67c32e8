"""`rakuten_sigir20`: the Rakuten France multimodal product classification data (SIGIR eCom'20).

X_train.csv: an integer index column (empty header), designation (the title), description
(HTML, often empty), productid, imageid. Y_train.csv: the same index column and prdtypecode
(the label). Images: image_<imageid>_product_<productid>.jpg under images/image_train.
Column names are matched ignoring case and underscores (Image_id = imageid; Title = designation).
"""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from pydantic import ConfigDict, Field

from bench.data.checks import require_columns, resolve_user_path
from bench.errors import BenchError
from bench.api.registry import PluginSpec

from .assemble import ColumnSources, ImageFolderOptions, finish_catalog, with_image_paths
from .catalog_options import GivenSplitOptions, LabelOptions
from .table_files import read_table, row_line
from .text_fields import html_to_text, join_text

ALIASES = {"designation": ("designation", "title"), "description": ("description",), "productid": ("productid",),
           "imageid": ("imageid",), "prdtypecode": ("prdtypecode",)}


class RakutenOptions(LabelOptions, GivenSplitOptions, ImageFolderOptions):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the dataset folder holding the X and Y files and the image folder")
    features_file: str = Field("X_train.csv", description="the product table (X_train*.csv is found too)")
    labels_file: str | None = Field("Y_train.csv", description="the label table (Y_train*.csv is found too); "
                                                               "null = no labels")
    images: str | None = Field("images/image_train", description="image folder (relative to the dataset folder); "
                                                                 "null = titles only")
    image_pattern: str = Field("image_{imageid}_product_{productid}.jpg", description="image file name")
    append_description: bool = Field(False, description="append the description (HTML stripped) to the title")
    split_column: str | None = Field(None, description="a column of the X file holding train/dev/test (the release "
                                                       "has none; see split_file)")
    encoding: str = "utf-8"


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _find_columns(frame: pl.DataFrame, wanted: tuple[str, ...], file: str) -> dict[str, str]:
    by_key = {_key(c): c for c in frame.columns}
    found = {}
    for role in wanted:
        match = next((by_key[a] for a in ALIASES[role] if a in by_key), None)
        if match is None:
            raise BenchError(f"column '{role}' is not in the table; its columns are: {', '.join(frame.columns)}",
                             file=file, field=role,
                             fix="point features_file / labels_file at the Rakuten X and Y files")
        found[role] = match
    return found


def _find_file(root: Path, name: str, option: str) -> Path:
    """The named file, or the one file matching its stem (X_train_update.csv for X_train.csv)."""
    if (root / name).is_file() or Path(name).is_absolute():
        return resolve_user_path(name, option=option, relative_to=root)
    stem, suffix = Path(name).stem, Path(name).suffix
    matches = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == suffix.lower()
                     and p.stem.lower().startswith(stem.lower()))
    if len(matches) == 1:
        return matches[0].resolve()
    if len(matches) > 1:
        raise BenchError(f"several files match {name}: {', '.join(p.name for p in matches)}", file=str(root),
                         field=option, fix=f"set {option} to the one to use")
    return resolve_user_path(name, option=option, relative_to=root)


def _index_column(frame: pl.DataFrame) -> str | None:
    first = frame.columns[0]
    if first.strip() == "" or first.lower().startswith(("unnamed", "integer_id", "index", "id")):
        return first
    return None


def load(opts: RakutenOptions, ctx=None):
    root = resolve_user_path(opts.path, option="path", kind="folder")
    x_path = _find_file(root, opts.features_file, "features_file")
    source = str(x_path)
    folder = resolve_user_path(opts.images, option="images", kind="folder", relative_to=root,
                               file=source) if opts.images is not None else None
    frame, notes = read_table(x_path, encoding=opts.encoding)
    cols = _find_columns(frame, ("designation", "description", "productid", "imageid"), source)
    require_columns(frame.columns, {"split_column": opts.split_column}, file=source)
    index = _index_column(frame)
    ids = pl.col(index).str.strip_chars() if index is not None else pl.int_range(pl.len()).cast(pl.Utf8)
    text = [pl.col(cols["designation"]).map_elements(html_to_text, return_dtype=pl.Utf8, skip_nulls=True)]
    if opts.append_description:
        text.append(pl.col(cols["description"]).map_elements(html_to_text, return_dtype=pl.Utf8, skip_nulls=True))
    items = frame.select(ids.alias("item_id"), join_text(text).fill_null("").alias("title"),
                         pl.col(cols["imageid"]).str.strip_chars().alias("_imageid"),
                         pl.col(cols["productid"]).str.strip_chars().alias("_productid"),
                         *([pl.col(opts.split_column).alias("split")] if opts.split_column else []))
    label_source = None
    if opts.labels_file is not None:
        y_path = _find_file(root, opts.labels_file, "labels_file")
        label_source = str(y_path)
        items = items.with_columns(_labels(items, read_table(y_path, encoding=opts.encoding)[0], y_path, index))
    if folder is not None:
        names = [opts.image_pattern.format(imageid=i, productid=p) if i and p else None
                 for i, p in zip(items["_imageid"].to_list(), items["_productid"].to_list())]
        items = with_image_paths(items, names, folder=folder, pattern=None, base=root,
                                 allow_outside=opts.allow_outside_images, file=source, field="image_pattern")
    items = items.drop("_imageid", "_productid")
    id_source = "row number" if index is None else (index or "(index column)")
    sources = ColumnSources(id=id_source, image="imageid/productid",
                            label="prdtypecode" if opts.labels_file is not None else None, split=opts.split_column)
    return finish_catalog("rakuten_sigir20", items, source=source, sources=sources, notes=notes,
                          missing_images=opts.missing_images, has_images=folder is not None,
                          label_source=label_source, options=opts,
                          line_of=lambda row: f"{x_path.name} {row_line(x_path, row, encoding=opts.encoding)}")


def _labels(items: pl.DataFrame, labels: pl.DataFrame, y_path: Path, index: str | None) -> pl.Series:
    """prdtypecode per item: joined on the index column, else by row order."""
    code = _find_columns(labels, ("prdtypecode",), str(y_path))["prdtypecode"]
    y_index = _index_column(labels) if labels.width > 1 else None
    if index is not None and y_index is not None:
        table = dict(zip(labels[y_index].str.strip_chars().to_list(), labels[code].str.strip_chars().to_list()))
        missing = [i for i in items["item_id"].to_list() if i not in table]
        if missing:
            raise BenchError(f"{len(missing)} products have no label row, e.g. index {', '.join(missing[:5])}",
                             file=str(y_path), field=y_index, fix="use the Y file that belongs to this X file")
        return pl.Series("label", [table[i] for i in items["item_id"].to_list()], dtype=pl.Utf8)
    if labels.height != items.height:
        raise BenchError(f"the label file has {labels.height} rows, the product file {items.height}",
                         file=str(y_path), field=code, fix="use the Y file that belongs to this X file")
    return labels[code].str.strip_chars().alias("label")


SPECS = [PluginSpec("dataset", "rakuten_sigir20",
                    "Rakuten France product classification (X_train.csv + Y_train.csv prdtypecode, "
                    "image_<imageid>_product_<productid>.jpg)", load, RakutenOptions)]
