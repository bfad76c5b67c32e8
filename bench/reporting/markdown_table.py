"""GitHub-markdown tables written directly: the same text as tabulate's ``github`` format with
``disable_numparse`` for cells that are single-line strings, without its per-cell type inference
(which made a 400-row leaderboard's layout cost ~20 ms)."""
from __future__ import annotations

import tabulate as tabulate_module
from tabulate import tabulate

MIN_PADDING = 2  # tabulate pads every header by two columns


def _width(text: str) -> int:
    """Display width as tabulate measures it: wcwidth when tabulate uses it (wide characters), else len."""
    if tabulate_module.WIDE_CHARS_MODE:
        return tabulate_module.wcwidth.wcswidth(text)  # -1 for control characters: tabulate decides those
    return len(text)


def github_table(headers: list[str], body: list[list[str]]) -> str:
    """``tabulate(body, headers, tablefmt="github", disable_numparse=True)``, written directly.

    Cells are left-aligned and stripped as tabulate does; anything its fast path does not cover (a
    cell that is not a string, a line break or tab, a control character) goes to tabulate itself.
    """
    cells = [[str(h) for h in headers]] + [[c for c in row] for row in body]
    plain = all(isinstance(c, str) and "\n" not in c and "\t" not in c and "\r" not in c
                for row in cells for c in row)
    if not plain or any(len(row) != len(headers) for row in body):
        return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    cells = [[c.strip() for c in row] for row in cells]
    sizes = [[_width(c) for c in row] for row in cells]
    if any(s < 0 for row in sizes for s in row):
        return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    widths = [max([sizes[0][j] + MIN_PADDING] + [row[j] for row in sizes[1:]]) for j in range(len(headers))]

    def line(row: list[str], size: list[int]) -> str:
        return "| " + " | ".join(c + " " * (w - s) for c, s, w in zip(row, size, widths)) + " |"

    out = [line(cells[0], sizes[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row, size) for row, size in zip(cells[1:], sizes[1:])]
    return "\n".join(out)
