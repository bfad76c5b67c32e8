"""`fashion_product_images`: the Fashion Product Images dataset (styles.csv + images/<id>.jpg).

styles.csv columns: id, gender, masterCategory, subCategory, articleType, baseColour, season,
year, usage, productDisplayName. Some published rows carry unquoted commas inside
productDisplayName (the last column); they are joined back into the name, not dropped.
"""
from __future__ import annotations


import polars as pl
from pydantic import ConfigDict, Field

from bench.data.checks import require_columns
from bench.api.registry import PluginSpec

from .assemble import ColumnSources, ImageFolderOptions, finish_catalog, locate_files, with_image_paths
from .catalog_options import GivenSplitOptions, LabelOptions
from .table_files import csv_row_line, decode_text, read_csv_text
from .text_fields import join_text

STYLE_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
                 "usage", "productDisplayName")


class FashionProductImagesOptions(LabelOptions, GivenSplitOptions, ImageFolderOptions):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the dataset folder (holding styles.csv and images/), or styles.csv itself")
    styles_file: str = Field("styles.csv", description="the styles table inside the folder")
    images: str | None = Field("images", description="image folder (relative to the dataset folder); "
                                                     "null = titles only")
    image_pattern: str = Field("{}.jpg", description="file name from the id")
    label_column: str | None = Field("articleType", description="masterCategory, subCategory, articleType, ... "
                                                                "or null for no labels")
    text_columns: list[str] = Field(default_factory=list, description="columns appended to productDisplayName, "
                                                                      "e.g. [baseColour, usage]")
    split_column: str | None = Field(None, description="a column of styles.csv holding train/dev/test "
                                                       "(the release has none; see split_file)")
    encoding: str = "utf-8"


def load(opts: FashionProductImagesOptions, ctx=None):
    root, styles, folder = locate_files(opts.path, "styles_file", opts.styles_file, opts.images)
    source = str(styles)
    text = decode_text(styles, opts.encoding)
    frame, notes = read_csv_text(text, styles, ",", bad_rows="join_last", join_with=",")
    wanted = {"id": "id", "productDisplayName": "productDisplayName", "label_column": opts.label_column,
              "split_column": opts.split_column}
    wanted.update({f"text_columns[{i}]": c for i, c in enumerate(opts.text_columns)})
    require_columns(frame.columns, wanted, file=source)
    title = join_text([pl.col(c) for c in ("productDisplayName", *opts.text_columns)]).fill_null("")
    items = frame.select(pl.col("id").str.strip_chars().alias("item_id"), title.alias("title"),
                         *([pl.col(opts.label_column).str.strip_chars().alias("label")] if opts.label_column else []),
                         *([pl.col(opts.split_column).alias("split")] if opts.split_column else []))
    if folder is not None:
        items = with_image_paths(items, items["item_id"].to_list(), folder=folder, pattern=opts.image_pattern,
                                 base=root, allow_outside=opts.allow_outside_images, file=source, field="image_pattern")
    sources = ColumnSources(id="id", image="images", label=opts.label_column, split=opts.split_column)
    return finish_catalog("fashion_product_images", items, source=source, sources=sources, notes=notes,
                          missing_images=opts.missing_images, has_images=folder is not None, options=opts,
                          line_of=lambda row: csv_row_line(text, ",", row, "join_last"))


SPECS = [PluginSpec("dataset", "fashion_product_images",
                    "Fashion Product Images (styles.csv + images/<id>.jpg); label column option (default articleType)",
                    load, FashionProductImagesOptions)]
