"""Category paths as real catalogues store them, parsed safely into lists of parts.

A label cell may be a plain path (``Beauty > Makeup > Lips``, ``Home >> Decor``), or a list
literal written by a scraper or a pandas dump: JSON (``["Home >> Decor >> Clocks"]``, Flipkart)
or a Python repr (``[['Beauty', 'Makeup'], ['Beauty', 'Gifts']]``, Amazon 2014 as CSV). List
literals are read as JSON first, then as Python syntax whose tree may hold only lists (or
tuples) of string constants: nothing is ever evaluated. Cells are bounded in length and nesting
before any parser sees them.

Shapes accepted, all giving one path (a list of parts):
- ``"A > B"``: split by the separator;
- ``[["A", "B"], ["A", "C"]]``: a list of paths, the first is used;
- ``["A", "B"]``: the parts of one path, unless every element holds the separator, then it is
  a list of paths (``["A >> B", "C >> D"]``) and the first is used;
- every part is split by the separator again, trimmed, and empty parts dropped.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Literal

import polars as pl

MAX_CELL_CHARS = 65_536  # a category cell longer than this is not a category path
MAX_DEPTH = 2  # a list of paths, each a list of parts
LABEL_JOIN = " > "
PATH_JOIN = "\x1f"  # joins parts for a path carried as one string (never in real category names)

LabelForm = Literal["path", "name"]
_ONE_JSON_STRING = re.compile(r'\[\s*"([^"\\]*)"\s*\]')
_LIST_START = re.compile(r"\[\s*(?:[\[\]\"'\d-]|[uU]['\"])")  # [[ [" [' [] [1 [u'


def looks_like_list(text: str) -> bool:
    """A list literal, whole or broken: "[...]" or "[" then a quote / bracket / number.
    A plain label that merely starts with a bracket ("[Refurbished] Phones") is not one."""
    return text.startswith("[") and (text.endswith("]") or _LIST_START.match(text) is not None)


class CellError(ValueError):
    """A label cell that is not a category path; the message says what is wrong with it."""


def _nesting(cell: str) -> int:
    """Deepest bracket nesting outside quoted strings (a cheap bound before parsing)."""
    depth = deepest = 0
    quote = None
    escaped = False
    for ch in cell:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "[" or ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "]" or ch == ")":
            depth -= 1
    return deepest


def _python_strings(node: ast.AST, depth: int = 0):
    """The value of a tree made only of lists/tuples of string constants, else CellError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)) and depth < MAX_DEPTH:
        return [_python_strings(e, depth + 1) for e in node.elts]
    raise CellError("it holds something other than lists of quoted strings")


def parse_literal(cell: str):
    """A list literal (JSON first, then Python syntax) as nested lists of strings."""
    if len(cell) > MAX_CELL_CHARS:
        raise CellError(f"it is {len(cell)} characters long (at most {MAX_CELL_CHARS} for a category cell)")
    simple = _ONE_JSON_STRING.fullmatch(cell)
    if simple:  # ["Home >> Decor"]: the common shape, no parser needed
        return [simple.group(1)]
    try:
        value = json.loads(cell)
    except (ValueError, RecursionError):
        if _nesting(cell) > MAX_DEPTH:
            raise CellError(f"it nests lists deeper than {MAX_DEPTH} levels (a list of paths of names)") from None
        try:
            tree = ast.parse(cell.strip(), mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            raise CellError("it is neither a JSON list nor a Python list literal") from None
        return _python_strings(tree.body)
    _check_strings(value)
    return value


def _check_strings(value, depth: int = 0) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and depth < MAX_DEPTH:
        for element in value:
            _check_strings(element, depth + 1)
        return
    if isinstance(value, list):
        raise CellError(f"it nests lists deeper than {MAX_DEPTH} levels (a list of paths of names)")
    raise CellError("it holds something other than lists of strings")


def _split(part: str, separator: str) -> list[str]:
    pieces = part.split(separator) if separator else [part]
    return [p.strip() for p in pieces if p.strip()]


def parse_path(cell: str | None, separator: str) -> list[str]:
    """The parts of the (first) category path in a cell; [] for an empty cell."""
    if cell is None:
        return []
    text = cell.strip()
    if not text:
        return []
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":  # one quoted path
        try:
            value = parse_literal(text)
        except CellError:
            return [p.strip("\"'").strip() for p in _split(text, separator) if p.strip("\"'").strip()]
    elif looks_like_list(text):
        value = parse_literal(text)
    else:
        return _split(text, separator)
    if isinstance(value, str):
        return _split(value, separator)
    paths = [v for v in value if v]  # drop empty paths ([] or "")
    if not paths:
        return []
    if any(isinstance(v, list) for v in paths):
        first = paths[0] if isinstance(paths[0], list) else [paths[0]]
    elif len(paths) > 1 and all(separator and separator in v for v in paths):
        first = [paths[0]]
    else:
        first = paths
    return [p for part in first for p in _split(part, separator)]


def label_of(parts: list[str], level: int | None, form: LabelForm = "path") -> str | None:
    """The label for a path: its first ``level`` parts joined by " > " (``form: path``, so equal
    names under different parents stay distinct) or only the part at that level (``form: name``).
    A path shorter than ``level`` keeps all its parts."""
    if not parts:
        return None
    cut = parts[:level] if level is not None else parts
    return cut[-1] if form == "name" else LABEL_JOIN.join(cut)


def category_columns(cells: pl.Series, separator: str, level: int | None, form: LabelForm = "path",
                     as_written: bool = False) -> tuple[pl.Series, pl.Series, dict[str, str]]:
    """(label, path, bad) for a column of cells: the label, the whole parsed path joined by
    PATH_JOIN (for `bench data inspect`), and {bad cell: what is wrong}.

    Each distinct cell is parsed once; plain paths and the common ``["A >> B"]`` shape are cut
    by polars, the rest by ``parse_path``. ``as_written``: a plain cell with no level keeps its
    text as the label.
    """
    uniques = cells.drop_nulls().unique()
    text = uniques.str.strip_chars()
    plain = ~(text.str.starts_with("[") | text.str.starts_with('"') | text.str.starts_with("'"))
    fast = text.zip_with(plain, text.str.extract(r'^\[\s*"([^"\\]*)"\s*\]$', 1))
    table = pl.DataFrame({"cell": uniques, "text": fast, "plain": plain})
    quick = table.filter(pl.col("text").is_not_null())
    parts = pl.col("text").str.split(separator).list.eval(pl.element().str.strip_chars()).list.eval(
        pl.element().filter(pl.element() != ""))
    cut = parts.list.head(level) if level is not None else parts
    label = cut.list.last() if form == "name" else cut.list.join(LABEL_JOIN)
    if as_written and level is None and form == "path":
        label = pl.when(pl.col("plain")).then(pl.col("text")).otherwise(label)
    quick = quick.select("cell", pl.when(label == "").then(None).otherwise(label).alias("label"),
                         parts.list.join(PATH_JOIN).alias("path")).with_columns(
        pl.when(pl.col("path") == "").then(None).otherwise(pl.col("path")).alias("path"))
    rows, bad = [], {}
    for cell in table.filter(pl.col("text").is_null())["cell"].to_list():
        try:
            found = parse_path(cell, separator)
        except CellError as exc:
            bad[cell] = str(exc)
            continue
        written = cell.strip()
        keep = as_written and level is None and form == "path" and not looks_like_list(written) \
            and written[:1] not in ('"', "'")
        rows.append((cell, written if keep else label_of(found, level, form), PATH_JOIN.join(found) or None))
    mapping = pl.concat([quick, pl.DataFrame(rows, schema=quick.schema, orient="row")])
    labels = cells.replace_strict(mapping["cell"], mapping["label"], default=None, return_dtype=pl.Utf8)
    paths = cells.replace_strict(mapping["cell"], mapping["path"], default=None, return_dtype=pl.Utf8)
    return labels.alias("label"), paths.alias("_label_path"), bad
