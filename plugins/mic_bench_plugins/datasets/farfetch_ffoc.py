"""`farfetch_ffoc`: product records of the FARFETCH Fashion Outfits Challenge (SIGIR eCom'22).

The release ships products.parquet, manual_outfits.parquet and an images/ folder. Only the
product records are read (outfits are not a task of this harness). Columns used, as the
released file names them: product_id, product_family / product_category /
product_sub_category (labels), product_brand and product_short_description (title text),
product_image_path (relative to images/). Every column is an option, so a release that names
them differently is a mapping away.
"""
from __future__ import annotations

from pydantic import ConfigDict, Field

from bench.data.checks import require_columns
from bench.api.registry import PluginSpec

from .assemble import ColumnSources, ImageFolderOptions, finish_catalog, locate_files, with_image_paths
from .catalog_options import GivenSplitOptions, LabelOptions
from .table_files import read_table, row_line
from .text_fields import as_text, join_text


class FarfetchOptions(LabelOptions, GivenSplitOptions, ImageFolderOptions):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the dataset folder (holding products.parquet and images/), or the products file")
    products_file: str = Field("products.parquet", description="the product table inside the folder")
    images: str | None = Field("images", description="image folder (relative to the dataset folder); "
                                                     "null = titles only")
    id_column: str = "product_id"
    image_column: str = "product_image_path"
    title_columns: list[str] = Field(default_factory=lambda: ["product_brand", "product_short_description"],
                                     min_length=1, description="columns joined into the title text")
    label_column: str | None = Field("product_category", description="product_family, product_category, "
                                                                     "product_sub_category, or null")
    split_column: str | None = Field(None, description="a column holding train/dev/test (see split_file)")


def load(opts: FarfetchOptions, ctx=None):
    root, table, folder = locate_files(opts.path, "products_file", opts.products_file, opts.images)
    source = str(table)
    frame, notes = read_table(table)
    wanted = {"id_column": opts.id_column, "image_column": opts.image_column if folder is not None else None,
              "label_column": opts.label_column, "split_column": opts.split_column}
    wanted.update({f"title_columns[{i}]": c for i, c in enumerate(opts.title_columns)})
    require_columns(frame.columns, wanted, file=source)
    title = join_text([as_text(frame, c) for c in opts.title_columns]).fill_null("")
    items = frame.select(as_text(frame, opts.id_column).str.strip_chars().alias("item_id"), title.alias("title"),
                         *([as_text(frame, opts.label_column).str.strip_chars().alias("label")]
                           if opts.label_column else []),
                         *([as_text(frame, opts.split_column).alias("split")] if opts.split_column else []))
    if folder is not None:
        names = frame.select(as_text(frame, opts.image_column)).to_series().to_list()
        items = with_image_paths(items, names, folder=folder, pattern=None, base=root,
                                 allow_outside=opts.allow_outside_images, file=source, field=opts.image_column)
    sources = ColumnSources(id=opts.id_column, image=opts.image_column, label=opts.label_column,
                            split=opts.split_column)
    return finish_catalog("farfetch_ffoc", items, source=source, sources=sources, notes=notes,
                          missing_images=opts.missing_images, has_images=folder is not None, options=opts,
                          line_of=lambda row: row_line(table, row))


SPECS = [PluginSpec("dataset", "farfetch_ffoc",
                    "FARFETCH Fashion Outfits Challenge product records (products.parquet + images/)",
                    load, FarfetchOptions)]
