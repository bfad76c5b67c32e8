"""Compare two runs group by group: metric deltas (B - A), e.g. before and after a code change."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from tabulate import tabulate

from bench.errors import BenchError
from bench.metrics.registry import quality_columns
from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table
from bench.reporting.results import load_run


def compare_tables(rows_a: pl.DataFrame, rows_b: pl.DataFrame, group_by: list[str],
                   metrics: list[str]) -> pl.DataFrame:
    """One row per group found in either run: each metric's mean in A, in B, and B - A."""
    spec = LeaderboardSpec(group_by=group_by, metrics=metrics)
    a, b = leaderboard_table(rows_a, spec), leaderboard_table(rows_b, spec)
    keep = [m for m in metrics if m in a.columns or m in b.columns]
    sides = []
    for side, table in (("a", a), ("b", b)):
        cols = [pl.col(m).alias(f"{m}_{side}") if m in table.columns else pl.lit(None, pl.Float64).alias(f"{m}_{side}")
                for m in keep]
        sides.append(table.select(*group_by, *cols, pl.col("n").alias(f"n_{side}")))
    both = sides[0].join(sides[1], on=group_by, how="full", coalesce=True, maintain_order="left_right", nulls_equal=True)
    return both.with_columns([(pl.col(f"{m}_b") - pl.col(f"{m}_a")).alias(f"{m}_delta") for m in keep])


def _cell(v, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def render_comparison(table: pl.DataFrame, group_by: list[str], metrics: list[str], name_a: str, name_b: str) -> str:
    keep = [m for m in metrics if f"{m}_delta" in table.columns]
    headers = [*group_by, *[h for m in keep for h in (f"{m} A", f"{m} B", f"Δ {m}")], "n A", "n B"]
    body = [[str(r[g]) for g in group_by]
            + [c for m in keep for c in (_cell(r[f"{m}_a"]), _cell(r[f"{m}_b"]), _cell(r[f"{m}_delta"], signed=True))]
            + [str(r["n_a"] or 0), str(r["n_b"] or 0)]
            for r in table.iter_rows(named=True)]
    return "\n".join([
        "# Comparison: B - A", "", f"- A: `{name_a}`", f"- B: `{name_b}`", "",
        tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), "",
        "Values are test-split means over seeds; Δ is B minus A (positive: B scores higher). "
        "A group found in one run only shows - for the other.", ""])


def compare_runs(run_a: str | Path, run_b: str | Path, group_by: list[str] | None = None,
                 metrics: list[str] | None = None) -> str:
    """Markdown table of metric deltas per group; defaults: run B's grouping, metrics both runs have."""
    from bench.reporting.write import run_leaderboard_spec

    run_a_dir, rows_a = load_run(run_a)
    run_b_dir, rows_b = load_run(run_b)
    if not group_by:
        spec_b = run_leaderboard_spec(run_b_dir.path, rows_b)
        group_by = [g for g in spec_b.group_by if g in rows_a.columns and g in rows_b.columns]
    for g in group_by:
        for name, rows in (("A", rows_a), ("B", rows_b)):
            if g not in rows.columns:
                raise BenchError(f"run {name} has no column '{g}' to group by", field="--group-by",
                                 fix=f"pick axes both runs have, e.g. {', '.join(_axes(rows_a, rows_b)) or 'fusion'}")
    if not group_by:
        raise BenchError("the two runs share no axis to group by", field="--group-by",
                         fix="pass --group-by with a column both runs have")
    known = quality_columns(dict.fromkeys([*rows_a.columns, *rows_b.columns]))  # any k, registry order
    metrics = metrics or [m for m in known if _numeric(rows_a, m) and _numeric(rows_b, m)]
    missing = [m for m in metrics if not (_numeric(rows_a, m) or _numeric(rows_b, m))]
    if missing or not metrics:
        raise BenchError(f"no metric {', '.join(missing) or 'in common'} in either run", field="--metric",
                         fix=f"pick from: {', '.join(m for m in known if _numeric(rows_a, m) or _numeric(rows_b, m))}")
    table = compare_tables(rows_a, rows_b, group_by, metrics)
    return render_comparison(table, group_by, metrics, str(run_a), str(run_b))


def _numeric(rows: pl.DataFrame, m: str) -> bool:
    return m in rows.columns and rows[m].dtype.is_numeric() and rows[m].drop_nulls().len() > 0


def _axes(rows_a: pl.DataFrame, rows_b: pl.DataFrame) -> list[str]:
    skip = {"trial_key", "status", "error", "config", "seed"}
    return [c for c in rows_a.columns if c in rows_b.columns and c not in skip
            and not rows_a[c].dtype.is_numeric()][:5]
