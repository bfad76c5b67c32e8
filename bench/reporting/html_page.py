"""The leaderboard as one self-contained HTML page that reads in a 1,400 px window.

The main table holds what ranks the rows: rank, the group's axis values, the headline metrics
(mean ± std over seeds), the ≈best mark and the counts. Everything else the markdown leaderboard
has sits in secondary tables below it, each led by the same rank and group columns: cost (open),
and, folded in <details>, the other quality metrics, the bootstrap intervals and the reference
figures. No cell is dropped: each column of the markdown table is in exactly one of these tables.
"""
from __future__ import annotations

import html as html_lib

import polars as pl
from tabulate import tabulate

from bench.reporting.leaderboard import (COST, NEAR_BEST, QUALITY, REFERENCE, LeaderboardSpec, display_columns,
                                          failed_trials, leaderboard_table, pivot_tables, placeholder_note,
                                          reference_note, selection_note, significance_note)
from bench.reporting.visible_text import visible

MAIN_METRICS = 4  # quality columns in the main table: the sort metric first, then the suite's order
MAIN_TABLE_ID = "leaderboard"
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1360px}"
    "table{border-collapse:collapse;margin:.5em 0;font-size:14px}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}"
    "th{background:#f3f3f3;white-space:normal;overflow-wrap:anywhere;max-width:11em;vertical-align:bottom}"
    "th:nth-child(-n+{keys}),td:nth-child(-n+{keys}){text-align:left}"
    ".scroll{overflow-x:auto;max-width:100%}"
    "details{margin:.8em 0}summary{cursor:pointer;font-weight:600}"
    "p{max-width:75em}img{max-width:100%}"
)


def _visible_cells(body: list[list]) -> list[list]:
    """Cells with control characters (U+202E, ANSI escapes) written as escapes; tabulate escapes HTML."""
    return [[visible(c) if isinstance(c, str) else c for c in row] for row in body]


def _html_table(headers: list[str], columns: list[list[str]], table_id: str | None = None) -> str:
    body = _visible_cells([list(row) for row in zip(*columns)])
    text = tabulate(body, headers=_visible_cells([headers])[0], tablefmt="html", disable_numparse=True)
    return text.replace("<table>", f'<table id="{table_id}">', 1) if table_id else text


def split_columns(table: pl.DataFrame, spec: LeaderboardSpec) -> tuple[dict[str, tuple[list[str], list[list[str]]]], int]:
    """The markdown leaderboard's columns, split into the page's tables: ``main``, ``cost``,
    ``metrics`` (quality columns not in the main table), ``intervals`` and ``references``, and how
    many key columns (rank, groups) lead each. An empty secondary table is left out."""
    headers, columns = display_columns(table, spec)
    by_name = dict(zip(headers, columns))
    group_by = [g for g in spec.group_by if g in table.columns] or ["trial_key"]
    chosen = [a for a in spec.select if a in table.columns] + [c for c in table.columns if c.startswith("selected_")]
    keys = [h for h in ["rank", *group_by, *chosen] if h in by_name]
    metrics = [c for c in table.columns if c in set(spec.metrics or QUALITY) and c in by_name]
    sort = spec.sort if spec.sort in metrics else None
    headline = list(dict.fromkeys([*([sort] if sort else []), *metrics]))[:MAIN_METRICS]
    headline = [m for m in metrics if m in headline]  # in the table's order
    counts = [h for h in ("n", "failed", "stopped") if h in by_name]
    mark = [NEAR_BEST] if NEAR_BEST in by_name else []
    groups = {
        "main": [*keys, *headline, *mark, *counts],
        "cost": [*keys, *[c for c in COST if c in by_name]],
        "metrics": [*keys, *[m for m in metrics if m not in headline]],
        "intervals": [*keys, *[h for h in headers if h.endswith(" 95% CI")]],
        "references": [*keys, *[h for h in headers if h.endswith(f" {REFERENCE}")]],
    }
    out = {}
    for name, names in groups.items():
        if name == "main" or len(names) > len(keys):
            out[name] = (names, [by_name[h] for h in names])
    return out, len(keys)


SECTIONS = [  # (table, summary, open)
    ("cost", "Cost (means over seeds)", True),
    ("metrics", "More quality metrics (mean ± std over seeds)", False),
    ("intervals", "95% bootstrap intervals over test items", False),
    ("references", "Reference figures, as the suite quotes them", False),
]


def render_page(rows: pl.DataFrame, spec: LeaderboardSpec, images: dict[str, str] | None = None,
                predictions: pl.DataFrame | None = None) -> str:
    """One self-contained page (tables, plus plots embedded as data URIs)."""
    table = leaderboard_table(rows, spec, predictions)
    tables, n_keys = split_columns(table, spec)
    def esc(text: str) -> str:
        return html_lib.escape(visible(text))

    notes = ["Quality columns are test-split means ± standard deviation over seeds; cost columns are means.",
             *selection_note(spec, table), *significance_note(table, spec), *reference_note(spec), *placeholder_note(table)]
    parts = [f"<h1>{esc(spec.title)}</h1>",
             _html_table(*tables["main"], table_id=MAIN_TABLE_ID)]
    for name, summary, is_open in SECTIONS:
        if name in tables:
            parts.append(f"<details{' open' if is_open else ''}><summary>{esc(summary)}</summary>"
                         f"<div class='scroll'>{_html_table(*tables[name])}</div></details>")
    parts += [f"<p>{esc(n)}</p>" for n in notes]
    if spec.pivot:
        for value, p_headers, p_body in pivot_tables(rows, spec.pivot):
            if p_body:
                parts += [f"<h2>{esc(value)} by {esc(spec.pivot['rows'])} and {esc(spec.pivot['columns'])}</h2>",
                          "<div class='scroll'>" + tabulate(_visible_cells(p_body), headers=_visible_cells([p_headers])[0],
                                                            tablefmt="html",
                                                            disable_numparse=True) + "</div>"]
    failed = failed_trials(rows, spec)
    if failed:
        parts += ["<h2>Failed trials</h2><ul>",
                  *[f"<li><code>{esc(k)}</code> {esc(l)}: {esc(e)}</li>" for k, l, e in failed], "</ul>"]
    for name, uri in (images or {}).items():
        parts.append(f'<figure><img alt="{esc(name)}" src="{uri}"><figcaption>{esc(name)}</figcaption></figure>')
    style = STYLE.replace("{keys}", str(n_keys))
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            # an empty icon: a browser asks for none, and the page stays free of requests
            f"<link rel='icon' href='data:,'><title>{esc(spec.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
