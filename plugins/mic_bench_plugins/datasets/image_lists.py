"""Image cells holding several pictures: a JSON or Python list literal such as
``["a.jpg", "b.jpg"]`` (scrapers and pandas dumps write them). The first listed file that
exists is the item's picture; when none exists the first is kept, so ``missing_images``
reports it. Parsed like category cells (category_paths.parse_literal: JSON, then a Python
tree of string constants only); nothing is evaluated.
"""
from __future__ import annotations

import os
from pathlib import Path

from bench.errors import BenchError

from .category_paths import CellError, looks_like_list, parse_literal


def _flatten(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [s for element in value for s in _flatten(element)]


def first_image(cell: str | None, folder: Path, *, file: str, field: str, where) -> str | None:
    """The cell's picture: itself when it is a plain path, else the first existing file of its
    list (relative names are looked up in ``folder``). ``where()`` names the cell's line."""
    if cell is None or not looks_like_list(str(cell).strip()):
        return cell
    try:
        names = [n.strip() for n in _flatten(parse_literal(str(cell).strip())) if n.strip()]
    except CellError as exc:
        raise BenchError(f"{where()}: the image cell {str(cell)[:80]!r} is not a list of file names ({exc})", file=file,
                         field=field, fix='write one path, or a list such as ["a.jpg", "b.jpg"]') from None
    for name in names:
        if os.path.isfile(name if os.path.isabs(name) else folder / name):
            return name
    return names[0] if names else None
