"""GitHub-markdown tables written directly: the same text as tabulate's ``github`` format with
``disable_numparse`` for cells that are single-line strings, without its per-cell type inference
(which made a 400-row leaderboard's layout cost ~20 ms). Widths are measured a column at a time."""
from __future__ import annotations

import re
from functools import lru_cache

import tabulate as tabulate_module
from tabulate import tabulate

from bench.reporting.visible_text import markdown_cell

MIN_PADDING = 2  # tabulate pads every header by two columns
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")


def _width(text: str) -> int:
    """Display width as tabulate measures it: wcwidth when tabulate uses it (wide characters), else len."""
    if tabulate_module.WIDE_CHARS_MODE:
        return tabulate_module.wcwidth.wcswidth(text)  # -1 for control characters: tabulate decides those
    return len(text)


@lru_cache(maxsize=4096)
def _one_cell_wide(char: str) -> bool:
    """A character wcswidth counts as exactly one cell wherever it stands: printable, in the basic
    plane (no flag or skin-tone pairs) and of width one on its own (not zero-width, joining or wide)."""
    return ord(char) <= 0xFFFF and char.isprintable() and tabulate_module.wcwidth.wcwidth(char) == 1


def _one_cell_per_character(text: str) -> bool:
    """Whether every character of ``text`` is one cell wide as tabulate measures it (then a cell's
    width is its length): always without wcwidth, else ASCII or one-cell characters only."""
    if not tabulate_module.WIDE_CHARS_MODE or text.isascii():
        return True
    return all(map(_one_cell_wide, set("".join(_NOT_ASCII.findall(text)))))


# Anything but printable ASCII and the marks a leaderboard writes (±, –, ≈, †) that are one cell wide:
# a column without such a character needs no further look (one regex scan).
_LEADERBOARD_MARKS = "±–≈†"
_NOT_PLAIN = re.compile("[^\\x20-\\x7e%s]" % re.escape("".join(
    c for c in _LEADERBOARD_MARKS if not tabulate_module.WIDE_CHARS_MODE or _one_cell_wide(c))))


def _cell(value):
    """A string cell made one visible cell (bench/reporting/visible_text.py); other values as they are."""
    return markdown_cell(value) if isinstance(value, str) else value


def github_table(headers: list[str], body: list[list[str]]) -> str:
    """``tabulate(body, headers, tablefmt="github", disable_numparse=True)``, written directly.

    Cells are left-aligned and stripped (headers are not) as tabulate does; anything its fast path does
    not cover (a cell that is not a string) goes to tabulate. Every string cell and header is escaped
    first: a ``|`` as ``\\|``, a line break or control character (ANSI escape, U+202E) as its escape
    sequence, so a label can neither split a row, shift a cell nor reach a terminal raw.
    """
    if not headers or any(len(row) != len(headers) for row in body):
        return tabulate([[_cell(c) for c in row] for row in body], headers=[_cell(h) for h in headers],
                        tablefmt="github", disable_numparse=True)
    return github_table_of_columns(headers, [list(c) for c in zip(*body)] if body else [[] for _ in headers])


def github_table_of_columns(headers: list[str], columns: list[list[str]]) -> str:
    """``github_table`` of a table given as one list of cells per column (of equal lengths)."""
    def by_tabulate() -> str:
        return tabulate([[_cell(c) for c in row] for row in zip(*columns)], headers=[_cell(h) for h in headers],
                        tablefmt="github", disable_numparse=True)

    if not headers or tabulate_module.PRESERVE_WHITESPACE or len(columns) != len(headers):
        return by_tabulate()
    widths, heads, bodies, patterns = [], [], [], []
    for header, cells in zip(headers, columns):
        header = str(header)
        try:
            text = header + "".join(cells)  # a TypeError: a cell that is not a string
        except TypeError:
            return by_tabulate()
        if "|" in text or not text.isprintable():  # (rare: one scan tells)
            header, cells = markdown_cell(header), list(map(markdown_cell, cells))
            text = header + "".join(cells)
        one_cell = True
        if text.isascii() and text.isprintable():  # (the quick test of most columns)
            pass
        elif _NOT_PLAIN.search(text):
            if not text.isprintable():  # line breaks, tabs, control characters: tabulate's own handling
                return by_tabulate()
            one_cell = _one_cell_per_character(text)
        cells = list(map(str.strip, cells))  # tabulate strips the body, not the header
        if one_cell:  # width = length: printf pads each row's cells in one call ("%-8s" is ljust(8))
            width = max(len(header) + MIN_PADDING, max(map(len, cells), default=0))
            patterns.append(f"%-{width}s")
        else:
            sizes = list(map(_width, [header, *cells]))
            if min(sizes) < 0:
                return by_tabulate()
            width = max([sizes[0] + MIN_PADDING, *sizes[1:]])
            cells = [c + " " * (width - s) for c, s in zip(cells, sizes[1:])]
            patterns.append("%s")
        widths.append(width)
        heads.append(header + " " * (width - (len(header) if one_cell else _width(header))))
        bodies.append(cells)
    row = "| " + " | ".join(patterns) + " |"
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += [row % cells for cells in zip(*bodies)]
    return "\n".join(lines)
