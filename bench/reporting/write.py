"""Leaderboards, plots and the HTML page for a stored run folder."""
from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import polars as pl

from bench.reporting.leaderboard import (LeaderboardSpec, columns_read, render_csv, render_html, render_markdown,
                                          spec_from_suite)
from bench.storage.paths import atomic_write_text
from bench.reporting.results import PREDICTIONS, load_run, stored_rows

HTML_PAGE = "leaderboard.html"


def run_leaderboard_spec(run_dir: Path, rows, group_by: list[str] | None = None) -> LeaderboardSpec:
    """The leaderboard settings of the suite as it was run (its copy in the run folder); a copy that
    no longer validates is an error unless the caller names the grouping. ``rows``: the run's rows,
    or just their schema (``stored_rows(...).header``)."""
    suite_copy = Path(run_dir) / "suite.yaml"
    if suite_copy.exists():
        from bench.config.schema import Suite
        from bench.config.yaml_files import read_with_includes
        from pydantic import ValidationError

        from bench.errors import BenchError
        from bench.config.validation import describe_validation_error

        raw = read_with_includes(suite_copy)
        try:
            return spec_from_suite(Suite.model_validate(raw))
        except ValidationError as exc:  # never guess the grouping of a table silently
            if group_by:
                return LeaderboardSpec(group_by=group_by)
            raise BenchError("the run's copy of its suite does not validate with this version of mic-bench: "
                             + describe_validation_error(exc, Suite), file=suite_copy,
                             fix="name the grouping yourself: bench leaderboard RUN --group-by AXIS") from None
    axes = [c for c in _schema(rows).names() if c not in ("trial_key",)][:1]
    return LeaderboardSpec(group_by=axes)


def load_predictions(run_dir: str | Path) -> pl.DataFrame | None:
    """Every trial's stored test predictions in one frame (trial_key column), or None if there are none."""
    files = sorted((Path(run_dir) / PREDICTIONS).glob("*.parquet"))
    if not files:
        return None
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_page(rows: pl.DataFrame, spec: LeaderboardSpec, predictions: pl.DataFrame | None,
              pngs: dict[str, bytes] | None = None) -> str:
    """The self-contained page: tables plus every plot inlined, readable offline."""
    from bench.reporting.plots import render_plots

    pngs = render_plots(rows, spec) if pngs is None else pngs
    images = {name.removesuffix(".png"): png_data_uri(png) for name, png in pngs.items()}
    return render_html(rows, spec, images, predictions)


def write_run_reports(run_dir: str | Path, rows: pl.DataFrame, spec: LeaderboardSpec,
                      predictions: pl.DataFrame | None = None) -> list[Path]:
    """plots/*.png and leaderboard.html beside leaderboard.md."""
    from bench.reporting.plots import render_plots, write_plots

    pngs = render_plots(rows, spec)
    written = write_plots(run_dir, rows, spec, pngs)
    atomic_write_text(Path(run_dir) / HTML_PAGE, html_page(rows, spec, predictions, pngs))
    return [*written, Path(run_dir) / HTML_PAGE]


# Row columns no leaderboard, pivot, plot or page reads: the per-trial config JSON is most of a large
# run's table, so `bench leaderboard` does not read it from disk.
NOT_ON_LEADERBOARD = ("config",)


def leaderboard_for_run(run_dir: str | Path, fmt: str = "md", group_by: list[str] | None = None,
                        sort: str | None = None) -> str:
    """`bench leaderboard`: the settings come from the suite copy and the stored column names; the
    markdown and CSV tables then read only the columns they use, the page every column but the config."""
    stored = stored_rows(run_dir)
    header = stored.header
    spec = run_leaderboard_spec(Path(run_dir), header, group_by)
    check_columns(header, Path(run_dir), group_by or [], sort)
    if group_by:
        spec = replace(spec, group_by=group_by)
    if sort:
        spec = replace(spec, sort=sort)
    columns = None if fmt == "html" else columns_read(spec, header.names())
    rows = stored.read(columns, skip=NOT_ON_LEADERBOARD)
    predictions = load_predictions(stored.run.path)
    if fmt == "csv":
        return render_csv(rows, spec, predictions)
    if fmt == "html":
        return html_page(rows, spec, predictions)
    return render_markdown(rows, spec, predictions)


def plots_for_run(run_dir: str | Path) -> list[Path]:
    """`bench plot`: (re)write RUN_DIR/plots/*.png and leaderboard.html from the stored rows."""
    run, rows = load_run(run_dir)
    return write_run_reports(run.path, rows, run_leaderboard_spec(run.path, rows), load_predictions(run.path))


def check_columns(rows, run_dir: Path, group_by: list[str], sort: str | None) -> None:
    """--group-by and --sort must name columns the run has; a typo would silently change the table."""
    import json

    from bench.errors import BenchError
    from bench.metrics.registry import quality_columns
    from bench.reporting.leaderboard import COST

    schema = _schema(rows)
    for name in group_by:
        if name not in schema:
            meta = Path(run_dir) / "run.json"
            axes = json.loads(meta.read_text()).get("axes") if meta.exists() else None
            raise BenchError(f"the run has no column '{name}' to group by", file=run_dir, field="--group-by",
                             fix=f"use one of the run's axes: {', '.join(dict.fromkeys([*(axes or []), 'seed']))}")
    if sort is not None and (sort not in schema or not schema[sort].is_numeric()):
        metrics = quality_columns(schema.names()) + [m for m in COST if m in schema]
        raise BenchError(f"the run has no metric '{sort}' to sort by", file=run_dir, field="--sort",
                         fix=f"use one of: {', '.join(metrics)}")


def _schema(rows: pl.DataFrame | pl.Schema) -> pl.Schema:
    return rows if isinstance(rows, pl.Schema) else rows.schema


def terminal_leaderboard(rows: pl.DataFrame, spec: LeaderboardSpec, width: int,
                         predictions: pl.DataFrame | None = None) -> str:
    """The leaderboard for a terminal ``width`` characters wide: the markdown table with secondary
    columns left out, least needed first (reference figures, intervals, cost, quality columns past
    the page's main table, then its other quality columns), until it fits, and a line naming what was
    left out. Rank, groups, the sort metric, ≈best and the counts always stay (a table that still
    does not fit then wraps)."""
    import textwrap

    from bench.reporting.html_page import split_columns
    from bench.reporting.leaderboard import (QUALITY, display_columns, failed_lines, leaderboard_table, placeholder_note,
                                              reference_note, selection_note, significance_note)
    from bench.reporting.markdown_table import github_table_of_columns

    table = leaderboard_table(rows, spec, predictions)
    headers, columns = display_columns(table, spec)
    parts, _ = split_columns(table, spec)
    droppable = [h for name in ("references", "intervals", "cost") for h in reversed(parts.get(name, ([], []))[0])]
    droppable += list(reversed(parts.get("metrics", ([], []))[0]))
    main = parts["main"][0]
    droppable = [h for h in droppable if h not in main]
    # then the main table's quality columns but the one it is sorted by (or its first)
    quality = [h for h in main if h in table.columns and h in set(spec.metrics or QUALITY)]
    keep = spec.sort if spec.sort in quality else (quality[0] if quality else None)
    droppable = list(dict.fromkeys(droppable + [h for h in reversed(quality) if h != keep]))
    shown = list(headers)
    left_out: list[str] = []

    def render() -> str:
        kept = [headers.index(h) for h in shown]
        return github_table_of_columns([headers[i] for i in kept], [columns[i] for i in kept])

    text = render()
    while droppable and max(map(len, text.splitlines())) > width:
        left_out.append(droppable.pop(0))
        shown.remove(left_out[-1])
        text = render()
    notes = ["Quality columns are test-split means ± standard deviation over seeds; cost columns are means.",
             *selection_note(spec)]
    notes += [n for n in significance_note(table, spec) if not n.startswith("95% CI") or
              any(h.endswith(" 95% CI") for h in shown)]
    notes += reference_note(spec) if any(h.endswith(" (reference)") for h in shown) else []
    notes += placeholder_note(table)
    if left_out:
        notes.append(f"Left out to fit {width} columns: {', '.join(reversed(left_out))} "
                     f"(every column is in leaderboard.md and leaderboard.html).")
    out = [spec.title, "", text, ""] + [textwrap.fill(n, width=max(width, 40)) for n in notes]
    if spec.pivot:
        from bench.reporting.leaderboard import pivot_tables
        from bench.reporting.markdown_table import github_table

        for value, p_headers, p_body in pivot_tables(rows, spec.pivot):
            if p_body:
                out += ["", f"{value} by {spec.pivot['rows']} and {spec.pivot['columns']}:", "",
                        github_table(p_headers, p_body)]
    failed = failed_lines(rows, spec)
    if failed:
        out += ["", "Failed trials:", *[textwrap.shorten(line, width=max(width, 40), placeholder=" …")
                                        for line in failed]]
    return "\n".join(out) + "\n"


def run_summary_table(run_dir: str | Path, rows: pl.DataFrame, width: int | None) -> str:
    """What `bench run` prints at the end: leaderboard.md as written, or, with a terminal width (a
    terminal, or $COLUMNS), the table fitted to it."""
    run_dir = Path(run_dir)
    if not width:
        return (run_dir / "leaderboard.md").read_text(encoding="utf-8")
    return terminal_leaderboard(rows, run_leaderboard_spec(run_dir, rows), width, load_predictions(run_dir))
