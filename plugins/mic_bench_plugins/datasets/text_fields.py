"""Turning raw catalogue fields into title text and labels.

Merchant descriptions carry HTML; titles come as lists or numbers. Kept apart from the
readers so every format cleans the same way (category paths: category_paths.py).
"""
from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import polars as pl

_BLOCK_TAGS = {"p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "table"}
_SPACES = re.compile(r"\s+")


class _TextCollector(HTMLParser):
    """Keeps text, drops tags, scripts and styles; block tags become spaces so words don't fuse."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(value: str | None) -> str | None:
    """Plain text of an HTML fragment, entities decoded, whitespace collapsed."""
    if value is None:
        return None
    if "<" not in value and "&" not in value:
        return _SPACES.sub(" ", value).strip()
    collector = _TextCollector()
    collector.feed(value)
    collector.close()
    return _SPACES.sub(" ", unescape("".join(collector.parts))).strip()


def strip_html(expr: pl.Expr) -> pl.Expr:
    return expr.map_elements(html_to_text, return_dtype=pl.Utf8, skip_nulls=True)


def as_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A column as text: lists are joined by spaces, other types cast."""
    dtype = frame.schema[column]
    if isinstance(dtype, pl.List):
        return pl.col(column).cast(pl.List(pl.Utf8)).list.join(" ")
    if dtype == pl.Utf8:
        return pl.col(column)
    if isinstance(dtype, (pl.Struct, pl.Array)):
        return pl.col(column).map_elements(str, return_dtype=pl.Utf8, skip_nulls=True)
    return pl.col(column).cast(pl.Utf8)


def join_text(parts: list[pl.Expr], separator: str = " ") -> pl.Expr:
    """Concatenate the non-empty parts (title first, then descriptions)."""
    cleaned = [pl.when(p.str.strip_chars() == "").then(None).otherwise(p.str.strip_chars()) for p in parts]
    return pl.concat_str(cleaned, separator=separator, ignore_nulls=True)
