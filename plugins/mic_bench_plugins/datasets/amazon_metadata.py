"""`amazon_metadata`: McAuley's Amazon product metadata (meta_<Genre>.json[.gz]).

One record per line. The 2014 release writes Python literals (single quotes), read here with
``ast.literal_eval`` (never eval); the 2018 release is strict JSON. Fields used: asin (id),
title, categories (2014: a list of category paths) or category (2018: one path), description
(optional), imUrl / imageURLHighRes (only for image_key: url). Images are local files the user
downloaded, found by asin ("{asin}.jpg") in the images folder.
"""
from __future__ import annotations

import ast
import gzip
import io
import zlib
from pathlib import Path
from typing import Iterator, Literal

import polars as pl
from pydantic import ConfigDict, Field

from bench.data.checks import resolve_user_path
from bench.errors import BenchError
from bench.data.file_reads import NotRegularFile, open_regular
from bench.api.registry import PluginSpec

from .assemble import ColumnSources, ImageFolderOptions, check_pattern, finish_catalog, with_image_paths
from .catalog_options import GivenSplitOptions, PathLabelOptions
from .category_paths import PATH_JOIN, label_of
from .table_files import GZIP_FLOOR, GZIP_MAX_RATIO, RepeatedKey, json_object
from .text_fields import html_to_text


MAX_RECORD_CHARS = 16 * 2**20  # far above any real record; bounds the literal parser's memory


class AmazonMetadataOptions(PathLabelOptions, GivenSplitOptions, ImageFolderOptions):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the metadata file, e.g. meta_Beauty.json.gz (gzip or plain)")
    images: str | None = Field("images", description="folder of downloaded images; null = text only")
    image_pattern: str = Field("{}.jpg", description="file name from the asin")
    image_key: Literal["asin", "url"] = Field("asin", description="name files by asin, or by the image URL's file name")
    split_column: str | None = Field(None, description="a record field holding train/dev/test (rarely present; "
                                                       "see split_file)")
    append_description: bool = Field(False, description="append the description (HTML stripped) to the title")
    missing_title: Literal["skip", "keep"] = Field("skip", description="records without a title: skip or keep")
    bad_rows: Literal["error", "skip"] = Field("error", description="lines that are neither JSON nor a Python literal")
    encoding: str = "utf-8"


def parse_record(line: str) -> dict:
    """A strict JSON object, or the 2014 release's Python-literal dict (bounded; never evaluated)."""
    if len(line) > MAX_RECORD_CHARS:
        raise ValueError(f"longer than {MAX_RECORD_CHARS} characters")
    try:
        record = json_object(line)
    except RepeatedKey:
        raise
    except ValueError:
        record = ast.literal_eval(line)
    if not isinstance(record, dict):
        raise ValueError("not an object")
    return record


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines, streamed: a regular file only, a line read up to MAX_RECORD_CHARS
    at a time, and a .gz inflating past GZIP_MAX_RATIO times its size refused (a bomb)."""
    gzipped = path.suffix.lower() == ".gz"
    limit = max(GZIP_FLOOR, GZIP_MAX_RATIO * path.stat().st_size) if gzipped else None
    number, total = 0, 0
    try:
        with open_regular(path) as raw:
            binary = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            with io.TextIOWrapper(binary, encoding=encoding) as handle:
                while line := handle.readline(MAX_RECORD_CHARS + 1):
                    number += 1
                    total += len(line)
                    if limit is not None and total > limit:
                        raise BenchError(f"the file inflates to more than {limit} characters ({GZIP_MAX_RATIO} times "
                                         "its compressed size)", file=str(path),
                                         fix="check it is the right file: text compresses 5 to 20 times, far less "
                                             "than this (a decompression bomb)")
                    if line.strip():
                        yield number, line
    except NotRegularFile as exc:
        raise BenchError(f"the metadata file {exc}", file=str(path), field="path",
                         fix="point path at the file itself (FIFOs, devices and sockets are not read)") from None
    except UnicodeDecodeError:
        raise BenchError(f"line {number + 1} is not valid {encoding} text", file=str(path), field="encoding",
                         fix="set encoding: latin-1 in the dataset options, or re-save the file as UTF-8") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise BenchError(f"cannot read the file after line {number}: {exc}", file=str(path),
                         fix="check the download is complete (gzip files must not be truncated)") from None


def _category_path(record: dict) -> list | None:
    paths = record.get("categories")
    if isinstance(paths, list) and paths:
        first = paths[0]
        return first if isinstance(first, list) else paths
    flat = record.get("category")
    return flat if isinstance(flat, list) and flat else None


def _image_name(record: dict) -> str | None:
    url = record.get("imUrl")
    for key in ("imageURLHighRes", "imageURL", "image"):
        if url is None and isinstance(record.get(key), list) and record[key]:
            url = record[key][0]
    return url.rsplit("/", 1)[-1] if isinstance(url, str) and url else None


def _description(record: dict) -> str | None:
    value = record.get("description")
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v)
    return html_to_text(value) if isinstance(value, str) and value else None


def read_records(path: Path, opts: AmazonMetadataOptions) -> tuple[pl.DataFrame, dict]:
    """Records as core columns plus ``_line`` (each record's line) and ``_label_path``; the
    notes count skipped lines, and ``untitled_ids`` lists the asins left out for no title."""
    rows, bad, untitled, untitled_ids = [], 0, 0, set()
    for number, line in _lines(path, opts.encoding):
        try:
            record = parse_record(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            if opts.bad_rows == "skip":
                bad += 1
                continue
            raise BenchError(f"line {number} is neither JSON nor a Python dict literal ({type(exc).__name__})",
                             file=str(path), field=f"line {number}",
                             fix="repair the line, or set bad_rows: skip to drop such lines") from None
        title = html_to_text(str(record["title"])) if record.get("title") else None
        if not title and opts.missing_title == "skip":
            untitled += 1
            if record.get("asin") is not None:
                untitled_ids.add(str(record["asin"]))
            continue
        text = title or ""
        if opts.append_description:
            description = _description(record)
            text = f"{text} {description}".strip() if description else text
        asin = record.get("asin")
        parts = _path_parts(_category_path(record))
        split = record.get(opts.split_column) if opts.split_column else None
        rows.append({"item_id": None if asin is None else str(asin), "title": text,
                     "image": (_image_name(record) if opts.image_key == "url" else asin),
                     "label": label_of(parts, opts.label_level, opts.label_form),
                     "_label_path": PATH_JOIN.join(parts) or None,
                     "split": None if split is None else str(split), "_line": number})
    notes = {k: v for k, v in (("skipped_bad_rows", bad), ("skipped_no_title", untitled)) if v}
    schema = {c: pl.Utf8 for c in ("item_id", "title", "image", "label", "_label_path", "split")}
    frame = pl.DataFrame(rows, schema={**schema, "_line": pl.Int64})
    return frame, {**notes, "untitled_ids": untitled_ids}


def _path_parts(parts: list | None) -> list[str]:
    """Category names, trimmed, HTML entities decoded (2018 names carry &amp;)."""
    return [html_to_text(str(p)) for p in parts or [] if p is not None and str(p).strip()]


def load(opts: AmazonMetadataOptions, ctx=None):
    path = resolve_user_path(opts.path, option="path")
    source = str(path)
    check_pattern(opts.image_pattern, file=source)
    folder = resolve_user_path(opts.images, option="images", kind="folder", relative_to=path.parent,
                               file=source) if opts.images else None
    frame, notes = read_records(path, opts)
    untitled_ids = notes.pop("untitled_ids")
    lines = frame["_line"].to_list()
    if frame.height == 0 and notes.get("skipped_no_title"):
        raise BenchError(f"none of the {notes['skipped_no_title']} records has a title", file=source, field="title",
                         fix="set missing_title: keep (and append_description: true) to use them anyway")
    if folder is not None:
        pattern = None if opts.image_key == "url" else opts.image_pattern
        frame = with_image_paths(frame, frame["image"].to_list(), folder=folder, pattern=pattern, base=path.parent,
                                 allow_outside=opts.allow_outside_images, file=source, field="images")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias("image"))
    has_labels = frame["label"].drop_nulls().len() > 0
    sources = ColumnSources(id="asin", image="images" if opts.image_key == "asin" else "imUrl",
                            label="categories" if has_labels else None, split=opts.split_column,
                            label_levels=opts.label_level is not None)
    return finish_catalog(path.name.split(".")[0], frame.drop("_line"), source=source, sources=sources, notes=notes,
                          missing_images=opts.missing_images, has_images=folder is not None, options=opts,
                          line_of=lambda row: f"line {lines[row]}", known_ids=untitled_ids)


SPECS = [PluginSpec("dataset", "amazon_metadata",
                    "McAuley Amazon product metadata (JSON or Python-literal lines); label = a level of the first "
                    "category path; images by asin", load, AmazonMetadataOptions)]
