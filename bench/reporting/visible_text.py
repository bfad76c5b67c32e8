"""Text from rows, suites and plugins made safe to show: on a terminal, in markdown, in HTML.

A label, group value or error may hold anything its source held: an ANSI escape (which would
recolour or rewrite the user's terminal), U+202E (which reverses what follows it on screen), a line
break or ``|`` (which split a markdown table's row or shift its cells a column). Every character
that is not printable is written as its escape (``\\x1b``, ``\\u202e``, ``\\n``), so what is shown
is what is stored, visibly.
"""
from __future__ import annotations

import unicodedata


# Control and format characters (ANSI escapes, bidi overrides such as U+202E), line and paragraph
# separators, surrogates, private-use and unassigned code points. Spaces of other widths stay (they
# are shown as spaces), as do the joiners emoji sequences are made of.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_JOINERS = {"\u200c", "\u200d"}


def _shown(char: str) -> bool:
    return char.isprintable() or char in _JOINERS or unicodedata.category(char) not in _HIDDEN


def _escape(char: str) -> str:
    return char.encode("unicode_escape", "backslashreplace").decode("ascii")


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with every hidden character (see _HIDDEN) written as its escape; ``newlines`` keeps
    line breaks (a multi-line message on a terminal)."""
    text = str(text)
    if text.isprintable():  # (nearly always: one C-level scan)
        return text
    return "".join(c if _shown(c) or (newlines and c == "\n") else _escape(c) for c in text)


def markdown_cell(text: str) -> str:
    """A markdown table cell: visible, and its ``|`` escaped so it stays one cell."""
    text = visible(text)
    return text.replace("|", "\\|") if "|" in text else text
