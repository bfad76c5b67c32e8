"""`shopee_price_match`: Shopee Price Match Guarantee (train.csv + train_images/).

train.csv columns: posting_id, image (a file name in train_images/), image_phash, title,
label_group. Listings of one product share a label_group: that is the matching group. There
are no categories; ``label_from_group`` turns the groups into class labels when a
classification run over products is wanted.
"""
from __future__ import annotations


import polars as pl
from pydantic import ConfigDict, Field

from bench.data.checks import require_columns
from bench.api.registry import PluginSpec

from .assemble import ColumnSources, ImageFolderOptions, finish_catalog, locate_files, with_image_paths
from .catalog_options import GivenSplitOptions, LabelOptions
from .table_files import read_table, row_line


class ShopeePriceMatchOptions(LabelOptions, GivenSplitOptions, ImageFolderOptions):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the dataset folder (holding train.csv and train_images/), or train.csv itself")
    table_file: str = Field("train.csv", description="the listing table inside the folder")
    images: str | None = Field("train_images", description="image folder (relative to the dataset folder); "
                                                           "null = titles only")
    label_from_group: bool = Field(False, description="also use label_group as the class label")
    split_column: str | None = Field(None, description="a column holding train/dev/test (the release has none; "
                                                       "see split_file)")
    encoding: str = "utf-8"


def load(opts: ShopeePriceMatchOptions, ctx=None):
    root, table, folder = locate_files(opts.path, "table_file", opts.table_file, opts.images)
    source = str(table)
    frame, notes = read_table(table, fmt="csv", encoding=opts.encoding)
    require_columns(frame.columns, {"posting_id": "posting_id", "image": "image", "title": "title",
                                    "label_group": "label_group", "split_column": opts.split_column}, file=source)
    items = frame.select(pl.col("posting_id").str.strip_chars().alias("item_id"),
                         pl.col("title").fill_null("").alias("title"),
                         pl.col("label_group").str.strip_chars().alias("group"),
                         pl.col("image"), *([pl.col(opts.split_column).alias("split")] if opts.split_column else []))
    if opts.label_from_group:
        items = items.with_columns(pl.col("group").alias("label"))
    if folder is not None:
        items = with_image_paths(items, items["image"].to_list(), folder=folder, pattern=None, base=root,
                                 allow_outside=opts.allow_outside_images, file=source, field="image")
    else:
        items = items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("image"))
    sources = ColumnSources(id="posting_id", image="image", label="label_group" if opts.label_from_group else None,
                            split=opts.split_column)
    return finish_catalog("shopee_price_match", items, source=source, sources=sources, notes=notes,
                          missing_images=opts.missing_images, has_images=folder is not None, options=opts,
                          line_of=lambda row: row_line(table, row, fmt="csv", encoding=opts.encoding))


SPECS = [PluginSpec("dataset", "shopee_price_match",
                    "Shopee Price Match Guarantee (train.csv + train_images/); groups from label_group for matching",
                    load, ShopeePriceMatchOptions)]
