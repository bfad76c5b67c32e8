"""Leaderboard plots: a pure function of stored rows, rendered headless to PNG bytes.

Figures are built with matplotlib's object API (``Figure``, Agg canvas), never pyplot: no
global state, no display needed, safe in the driver while Ray runs.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

from bench.metrics import registry
from bench.reporting.leaderboard import LeaderboardSpec, group_label, leaderboard_table, table_groups
from bench.storage.paths import atomic_path

PLOTS = "plots"
COST_AXIS = "train_samples_per_s"
RETRIEVAL = re.compile(r"^(ndcg|mar|p|map|mrr|recall)@\d+$")  # ranking metrics (bench/metrics/retrieval.py)
THRESHOLD_F1 = ("f1", "f1_all")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _file_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-") for p in parts) + ".png"


def _number(value) -> float:
    """None and NaN (one seed has no spread) as 0, for bar lengths and error bars."""
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _groups(table: pl.DataFrame, spec: LeaderboardSpec) -> tuple[list[str], pl.DataFrame]:
    group_by = table_groups(table, spec)
    done = table.filter(pl.col("n") > 0) if "n" in table.columns else table
    return [group_label(r) for r in done.select(group_by).iter_rows()], done


def _headline_metrics(table: pl.DataFrame, spec: LeaderboardSpec) -> list[str]:
    """The ranking metric, plus macro-F1 when the table has it (the usual classification headline)."""
    present = [m for m in (spec.metrics or registry.quality_columns(table.columns)) if m in table.columns]
    first = spec.sort if spec.sort in present else (present[0] if present else None)
    return [m for m in dict.fromkeys([first, "macro_f1"]) if m in present]


def metric_bars(table: pl.DataFrame, spec: LeaderboardSpec, metric: str) -> Figure:
    """One horizontal bar per group (best at the top), seed standard deviation as error bars."""
    labels, done = _groups(table, spec)
    means = [_number(v) for v in done[metric].to_list()]
    stds = [_number(v) for v in done[f"{metric}_std"].to_list()] if f"{metric}_std" in done.columns else None
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(labels)))
    ax = fig.add_subplot()
    pos = list(range(len(labels)))[::-1]
    ax.barh(pos, means, xerr=stds, color="#4c72b0", ecolor="#333", capsize=3)
    ax.set_yticks(pos, labels)
    ends = [m + s for m, s in zip(means, stds or [0.0] * len(means))]
    for y, m, end in zip(pos, means, ends):
        ax.text(end, y, f"  {m:.3f}", va="center", fontsize=8)  # right of the error bar
    ax.set_xlabel(f"{metric} (test; mean ± std over seeds)")
    ax.set_xlim(0, max(1.0, max(ends, default=0) * 1.15))
    ax.set_title(f"{spec.title}: {metric}")
    return fig


def quality_vs_cost(table: pl.DataFrame, spec: LeaderboardSpec, metric: str) -> Figure:
    """Quality against training throughput, one point per group: the trade-off at a glance.

    With several grouping axes, colour follows the first (e.g. method) and the point labels name
    the others (e.g. the fine-tune fraction), so crowded plots stay readable.
    """
    _, done = _groups(table, spec)
    group_by = table_groups(done, spec)
    colour_by, label_by = (group_by[0], group_by[1:]) if len(group_by) > 1 else (None, group_by)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    series = done.partition_by(colour_by, maintain_order=True) if colour_by else [done]
    for part in series:
        yerr = [_number(v) for v in part[f"{metric}_std"].to_list()] if f"{metric}_std" in part.columns else None
        ax.errorbar(part[COST_AXIS].to_list(), part[metric].to_list(), yerr=yerr, fmt="o", capsize=3,
                    label=str(part[colour_by][0]) if colour_by else None,
                    **({} if colour_by else {"color": "#c44e52", "ecolor": "#999"}))
        for r in part.iter_rows(named=True):
            if r[COST_AXIS] is not None and r[metric] is not None:
                ax.annotate(group_label([r[g] for g in label_by]), (r[COST_AXIS], r[metric]),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
    positive = [v for v in done[COST_AXIS].to_list() if v is not None and v > 0]
    if positive and max(positive) / min(positive) >= 20:
        ax.set_xscale("log")
    if colour_by:
        ax.legend(title=colour_by, fontsize=8)
    ax.set_xlabel("train samples / s (higher is cheaper)")
    ax.set_ylabel(f"{metric} (test; mean ± std over seeds)")
    ax.set_title(f"{spec.title}: {metric} vs training cost")
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    return fig


def pivot_curves(rows: pl.DataFrame, pivot: dict, value: str, title: str) -> Figure | None:
    """One line per pivot row (e.g. method) across the pivot columns (e.g. fine-tune fraction)."""
    r, c = pivot["rows"], pivot["columns"]
    ok = rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows
    if not {r, c, value} <= set(ok.columns) or ok.is_empty() or not ok[value].dtype.is_numeric():
        return None
    agg = ok.group_by([r, c]).agg(pl.col(value).mean().alias("m"), pl.col(value).std().alias("s"))
    numeric = agg[c].dtype.is_numeric()
    columns = sorted(agg[c].unique().to_list(), key=lambda v: (isinstance(v, str), v))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name in sorted(agg[r].unique().to_list(), key=str):
        line = agg.filter(pl.col(r) == name)
        cells = dict(zip(line[c].to_list(), zip(line["m"].to_list(), line["s"].to_list())))
        xs = [col for col in columns if col in cells]
        ax.errorbar([x if numeric else columns.index(x) for x in xs], [cells[x][0] for x in xs],
                    yerr=[_number(cells[x][1]) for x in xs], marker="o", capsize=3, label=str(name))
    if numeric and min(columns) > 0 and max(columns) / min(columns) >= 10:
        ax.set_xscale("log")
        ax.set_xticks(columns, [str(v) for v in columns])
    elif not numeric:
        ax.set_xticks(range(len(columns)), [str(v) for v in columns])
    ax.set_xlabel(c)
    ax.set_ylabel(f"{value} (test; mean ± std over seeds)")
    ax.set_title(f"{title}: {value} by {c}")
    ax.grid(alpha=0.3)
    ax.legend(title=r)
    return fig


def retrieval_bars(table: pl.DataFrame, spec: LeaderboardSpec) -> Figure | None:
    """Matching suites: the retrieval metrics side by side for every group."""
    metrics = [m for m in table.columns if RETRIEVAL.match(m)] + [m for m in THRESHOLD_F1 if m in table.columns]
    if not any(RETRIEVAL.match(m) for m in metrics):
        return None
    labels, done = _groups(table, spec)
    width = 0.8 / len(metrics)
    fig = Figure(figsize=(max(7, 1.2 * len(labels) * len(metrics) * 0.4), 4.5))
    ax = fig.add_subplot()
    for i, m in enumerate(metrics):
        stds = [_number(v) for v in done[f"{m}_std"].to_list()] if f"{m}_std" in done.columns else None
        ax.bar([g + i * width for g in range(len(labels))], [_number(v) for v in done[m].to_list()], width,
               yerr=stds, capsize=2, label=m)
    ax.set_xticks([g + width * (len(metrics) - 1) / 2 for g in range(len(labels))], labels,
                  rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score (mean ± std over seeds)")
    ax.set_title(f"{spec.title}: retrieval")
    ax.legend(ncols=len(metrics), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def figures(rows: pl.DataFrame, spec: LeaderboardSpec) -> dict[str, Figure]:
    """File name -> figure for every plot the rows support (none for a run with no finished trial)."""
    table = leaderboard_table(rows, spec)
    if "n" not in table.columns or table.filter(pl.col("n") > 0).is_empty():
        return {}
    out: dict[str, Figure] = {}
    headline = _headline_metrics(table, spec)
    for m in headline:
        out[_file_name("bars", m)] = metric_bars(table, spec, m)
    quality = "macro_f1" if "macro_f1" in headline else (headline[0] if headline else None)
    if quality and COST_AXIS in table.columns and not registry.lower_is_better(quality):
        out[_file_name("quality-vs-cost", quality)] = quality_vs_cost(table, spec, quality)
    if spec.pivot:
        for value in dict.fromkeys([spec.pivot.get("value", "accuracy"), *spec.pivot.get("extra_values", [])]):
            fig = pivot_curves(rows, spec.pivot, value, spec.title)
            if fig is not None:
                out[_file_name("curve", value, "by", spec.pivot["columns"])] = fig
    fig = retrieval_bars(table, spec)
    if fig is not None:
        out["retrieval.png"] = fig
    return out


def render_plots(rows: pl.DataFrame, spec: LeaderboardSpec) -> dict[str, bytes]:
    """File name -> PNG bytes of every figure."""
    return {name: _png(fig) for name, fig in figures(rows, spec).items()}


def write_plots(run_dir: str | Path, rows: pl.DataFrame, spec: LeaderboardSpec,
                images: dict[str, bytes] | None = None) -> list[Path]:
    """(Re)write every plot into RUN_DIR/plots/; plots the rows no longer support are removed.
    ``images`` (from render_plots) avoids drawing the figures a second time."""
    folder = Path(run_dir) / PLOTS
    images = render_plots(rows, spec) if images is None else images
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        if stale.name not in images:
            stale.unlink()
    written = []
    for name, png in images.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(png)
        written.append(folder / name)
    return written
