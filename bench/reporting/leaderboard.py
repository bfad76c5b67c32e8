"""Leaderboards: a pure function of stored rows (group by axes, mean and spread over seeds, rank)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import chain

import polars as pl

from bench.errors import BenchError
from bench.metrics import registry
from bench.reporting.markdown_table import github_table, github_table_of_columns
from bench.reporting.visible_text import visible
from bench.metrics.retrieval_columns import legacy_columns, upgrade_legacy_rows

# the default columns come from the metric registry (any k: ndcg@5 is shown like ndcg@10)
QUALITY = registry.quality_metrics()  # at the default k; tables use registry.quality_columns(row columns)
COST = registry.cost_metrics()
NEAR_BEST = "≈best"
REFERENCE = "(reference)"


@dataclass
class LeaderboardSpec:
    group_by: list[str]
    sort: str | None = None
    metrics: list[str] | None = None
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    reference_source: str = ""
    pivot: dict | None = None
    title: str = "Leaderboard"
    # Hyperparameter search: within each group, the configuration (values of these axes) with the
    # best mean dev metric is chosen, and only its rows are reported. Test never chooses.
    select: list[str] = field(default_factory=list)
    select_metric: str | None = None
    select_mode: str = "max"


def _collected(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """A lazy query run (streaming: memory follows the result, not the rows); a DataFrame as it is.
    Rows already in memory stay eager throughout: polars' eager operations skip the query planning
    that costs more than the work on a few thousand rows."""
    return frame.collect(engine="streaming") if isinstance(frame, pl.LazyFrame) else frame


def select_on_dev(rows: pl.DataFrame | pl.LazyFrame, spec: LeaderboardSpec, group_by: list[str]):
    """Keep, per group, the rows of the search configuration whose mean dev metric (over its ok
    rows) is best; the chosen metric value is added as ``selected_<metric>``. A LazyFrame stays lazy
    (only the per-configuration means are collected)."""
    names = rows.collect_schema().names()
    select = [a for a in spec.select if a in names]
    metric = spec.select_metric
    if not select or metric is None:
        return rows
    if metric not in names:
        raise BenchError(f"cannot choose configurations on dev: the rows have no column '{metric}'",
                         field="selection.metric", fix="choose a dev metric the trials record (dev_macro_f1, ...)")
    ok = rows.filter((pl.col("status") == "ok") & pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())
    means = ok.group_by(group_by + select).agg(pl.col(metric).mean().alias(f"selected_{metric}"))
    means = _collected(means)
    if means.is_empty():
        return rows
    best = (means.sort(f"selected_{metric}", descending=spec.select_mode == "max", nulls_last=True)
            .group_by(group_by, maintain_order=True).first())
    best = best.lazy() if isinstance(rows, pl.LazyFrame) else best
    chosen = rows.join(best, on=group_by + select, how="inner", nulls_equal=True)
    unrankable = rows.join(best.select(group_by), on=group_by, how="anti", nulls_equal=True)  # no ok row at all
    return pl.concat([chosen, unrankable], how="diagonal_relaxed")


# every name the upgrade of old retrieval rows reads or writes is one of these (bench.metrics.retrieval_columns)
_MAY_BE_LEGACY = re.compile(r"(?:map|mrr|p)@\d+|f1(?:_all|_note|_threshold)?")


def columns_read(spec: LeaderboardSpec, names: list[str]) -> list[str]:
    """The row columns a markdown or CSV leaderboard of ``spec`` reads (table, pivots, failed list,
    intervals) among the stored ``names``, in their order: `bench leaderboard` reads only these."""
    pivot = spec.pivot or {}
    wanted = {"trial_key", "status", "seed", "error", PLACEHOLDERS, *spec.group_by, *spec.select,
              *(spec.metrics or registry.quality_columns(names)), *COST, spec.sort, spec.select_metric,
              *([pivot["rows"], pivot["columns"], pivot.get("value", "accuracy"), *pivot.get("extra_values", [])]
                if pivot else [])}
    if any(map(_MAY_BE_LEGACY.fullmatch, filter(None, wanted))):  # (the names alone rule most tables out)
        legacy = legacy_columns(names)  # where a metric the upgrade of old rows touches is read, all it reads
        wanted |= set(legacy) if wanted & set(legacy) else set()
    return [c for c in names if c in wanted or c.startswith("selected_")]


def group_label(values: list) -> str:
    return " / ".join(str(v) for v in values)


def leaderboard_table(rows: pl.DataFrame | pl.LazyFrame, spec: LeaderboardSpec,
                      predictions: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per group: n ok / failed, mean and std of every metric, mean cost, rank.

    With the stored test predictions it also carries bootstrap intervals and the ``near_best`` mark
    (see bench.reporting.significance). ``rows`` may be a LazyFrame (e.g. ``pl.scan_parquet``): the per-group
    aggregation then streams, so memory follows the groups and the columns used, not the rows. Either
    way it is one query: counts, means and spreads of every numeric metric and cost column in one
    pass; the columns without a value among the ok rows are dropped afterwards. Rows tied on the sort
    metric keep the order of their group values.
    """
    frame = rows
    names = frame.collect_schema().names()
    dev_ranked = search_only(spec, names)
    group_by = ([a for a in spec.select if a in names] if dev_ranked
                else [g for g in spec.group_by if g in names] or ["trial_key"])
    if "status" not in names:
        frame = frame.with_columns(pl.lit("ok").alias("status"))
    # the choice on dev reads axes and dev_ metrics, which the upgrade never changes; upgrading after
    # it keeps a streamed search bounded (before the choice's join, polars buffered every row)
    frame = upgrade_legacy_rows(frame if dev_ranked else select_on_dev(frame, spec, group_by))
    schema = frame.collect_schema()
    names = schema.names()
    wanted = spec.metrics or registry.quality_columns(names)
    numeric = {m for m in wanted + COST if m in schema and schema[m].is_numeric()}
    metrics = [m for m in wanted if m in numeric]
    cost = [c for c in COST if c in numeric]
    chosen = [] if dev_ranked else [a for a in spec.select if a in names] + [c for c in names if c.startswith("selected_")]
    dev_mean = [spec.select_metric] if dev_ranked else []  # a search-only suite: rows ranked by this dev mean
    placeholders = [PLACEHOLDERS] if PLACEHOLDERS in names else []
    # one group-by: counts over all rows, figures over the ok rows (masked to null elsewhere, which
    # mean, std and max skip: the same values as after filtering)
    ok = pl.col("status") == "ok"
    figures = list(dict.fromkeys(metrics + cost + placeholders + dev_mean))
    if isinstance(frame, pl.DataFrame):  # rows in memory: masked inside the aggregation, one polars call
        source, figure = frame, lambda c: pl.when(ok).then(pl.col(c)).alias(c)
    else:  # a scan streams just these columns
        source = frame.select(*group_by, "status", *[pl.when(ok).then(pl.col(c)).alias(c) for c in figures],
                              *[c for c in chosen if c not in group_by and c not in figures])
        figure = pl.col
    aggs = [(pl.col("status") == "failed").sum().alias("failed"), (pl.col("status") == "stopped").sum().alias("stopped"),
            ok.sum().alias("n")]
    for m in metrics:
        aggs += [figure(m).mean(), figure(m).std().alias(f"{m}_std")]
    aggs += [figure(c).mean() for c in cost]
    aggs += [pl.col(c).filter(ok).first() for c in chosen]
    aggs += [figure(c).max() for c in placeholders]
    aggs += [figure(c).fill_nan(None).mean().alias(f"selected_{c}") for c in dev_mean]
    table = _collected(source.group_by(group_by).agg(aggs))
    if not table["n"].sum():  # not a single ok row: the counts alone
        table = table.select(*group_by, "failed", "stopped", pl.lit(0).alias("n"))
        metrics = []
    else:  # a mean is null in every group only where no ok row has a value: such columns are left out
        absent = [m for m in metrics + cost if table[m].null_count() == table.height]
        table = table.drop(*absent, *[f"{m}_std" for m in absent if m in metrics]) if absent else table
        metrics = [m for m in metrics if m not in absent]
    sort = spec.sort if spec.sort in table.columns else (metrics[0] if metrics else None)
    if dev_ranked and f"selected_{spec.select_metric}" in table.columns:  # test never orders a search's configurations
        ties = [g for g in group_by]
        table = table.sort([f"selected_{spec.select_metric}", *ties],
                           descending=[spec.select_mode == "max"] + [False] * len(ties), nulls_last=True,
                           maintain_order=True, multithreaded=False)
        sort = spec.select_metric[len("dev_"):] if spec.select_metric.startswith("dev_") else None
        sort = sort if sort in metrics else (metrics[0] if metrics else None)  # the test figure the marks compare
    elif sort:
        ties = [g for g in group_by if g != sort]
        table = table.sort([sort, *ties], descending=[registry.higher_is_better(sort)] + [False] * len(ties),
                           nulls_last=True, maintain_order=True, multithreaded=False)  # a few hundred rows
    table = table.with_row_index("rank", offset=1)
    if spec.reference:
        labels = [group_label(r) for r in table.select(group_by).iter_rows()]
        for m in sorted({m for ref in spec.reference.values() for m in ref}):
            table = table.with_columns(pl.Series(f"ref_{m}", [spec.reference.get(l, {}).get(m) for l in labels],
                                                 dtype=pl.Float64))
    if predictions is not None and table.height and "n" in table.columns:
        table = _with_significance(table, _collected(frame), predictions, group_by, metrics, sort, dev_ranked)
    return table


def table_groups(table: pl.DataFrame, spec: LeaderboardSpec) -> list[str]:
    """The columns a leaderboard table was grouped by: the axes, else (a search-only suite) the
    search's configuration columns, else the trial key."""
    axes = [g for g in spec.group_by if g in table.columns]
    if axes or "trial_key" in table.columns:
        return axes or ["trial_key"]
    return [a for a in spec.select if a in table.columns] or ["trial_key"]


def search_only(spec: LeaderboardSpec, names: list[str]) -> bool:
    """A search with no axis to group by but the seed: each row is one sampled configuration, ranked by
    its mean dev metric over its seeds (the dev-chosen configuration first); test never orders."""
    return (not [g for g in spec.group_by if g in names] and spec.select_metric is not None
            and bool([a for a in spec.select if a in names]) and spec.select_metric in names)


def _with_significance(table: pl.DataFrame, rows: pl.DataFrame, predictions: pl.DataFrame, group_by: list[str],
                       metrics: list[str], sort: str | None, dev_ranked: bool = False) -> pl.DataFrame:
    """Intervals of the metrics flagged ``interval`` in the registry (and of the sort metric), and
    the marks on the sort metric. The row labelled best is the first (a test ranking's top); in a
    dev-ranked search no row is labelled: every configuration is marked, the dev-chosen one too."""
    from bench.reporting.significance import group_significance

    ranked = table.filter(pl.col("n") > 0)
    best = (ranked.select(group_by).row(0) if ranked.height and not dev_ranked and sort is not None
            and registry.higher_is_better(sort) else None)
    shown = [m for m in metrics if (registry.lookup(m) is not None and registry.lookup(m).interval) or m == sort]
    stats = group_significance(rows, predictions, group_by, shown, sort, best, label_best=not dev_ranked)
    if stats is None:
        return table
    return table.join(stats, on=group_by, how="left", maintain_order="left", nulls_equal=True)


def _fmt(value, std=None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        if std is not None and not (isinstance(std, float) and math.isnan(std)):
            text += f" ± {std:.{digits}f}"
        return text
    return str(value)


def _fmt_interval(low, high) -> str:
    return "-" if low is None or high is None else f"{low:.3f}–{high:.3f}"


def _fmt_mark(mark, p) -> str:
    if mark is None:
        return "-"
    if mark == "best":
        return "best"
    share = "p<0.001" if p < 0.001 else f"p={p:.3f}"
    return f"{mark} {share}".strip()


def selection_note(spec: LeaderboardSpec, table: pl.DataFrame | None = None) -> list[str]:
    if not spec.select or not spec.select_metric:
        return []
    if table is not None and "trial_key" not in table.columns and not [g for g in spec.group_by if g in table.columns]:
        return [f"Search: one row per configuration ({', '.join(table_groups(table, spec))}), its seeds averaged, "
                f"ranked by mean {spec.select_metric} over its seeds (selected_{spec.select_metric}); the first row "
                "is the configuration chosen on dev. Test figures are shown beside and play no part in the order "
                "or the choice."]
    return [f"Search: within each group the configuration ({', '.join(spec.select)}) with the best mean "
            f"{spec.select_metric} over its seeds is chosen (selected_{spec.select_metric}); quality columns "
            "are that configuration's test figures. The test split plays no part in the choice."]


_UNITS = {"item": "items", "query": "queries", "pair": "pairs"}


def significance_note(table: pl.DataFrame, spec: LeaderboardSpec) -> list[str]:
    """The sentences that explain the interval and mark columns (only those present)."""
    from bench.reporting.significance import ALPHA, LEVEL, N_RESAMPLES

    out = []
    if any(c.endswith("_ci_low") for c in table.columns):
        out.append(f"{LEVEL:.0%} CI columns: percentile bootstrap over test items and seeds ({N_RESAMPLES} resamples "
                   "of the stored test predictions; a row's seeds are drawn with replacement along with the items, "
                   "so the interval holds both the finite test set and the seed spread; retrieval metrics resample "
                   "the queries they score, pair metrics the labelled pairs).")
    if "near_best" in table.columns:
        metric = _marked_metric(table, spec)
        found = registry.lookup(metric)
        units = _UNITS.get(found.aggregation, "items") if found is not None else "items"
        labelled = "best" in table["near_best"].to_list()
        out.append(f"{NEAR_BEST}: every pair of rows compared at once on test {metric}, paired over the same test "
                   f"{units}, two-sided; a row showing only p is significantly worse than another row, and at most "
                   f"{ALPHA:.0%} of leaderboards mark any row wrongly (family-wise error over all rows, max-T step-down "
                   f"over all pairs: when every row has one seed, an exact permutation test shuffling the rows' outputs "
                   f"within each test unit; with seeds, a bootstrap of the {units} with each row's seeds resampled "
                   "along); ≈ marks rows no row beats significantly; p is the family-wise adjusted "
                   "p of the closest comparison"
                   + ("; best is the row with the best value (no row is a reference chosen before the test)."
                      if labelled else "; no row is labelled best: test plays no part in this ranking."))
    return out


def _marked_metric(table: pl.DataFrame, spec: LeaderboardSpec) -> str:
    """The metric the marks compare (as ``leaderboard_table`` chose it)."""
    if spec.select_metric and f"selected_{spec.select_metric}" in table.columns and "trial_key" not in table.columns \
            and not [g for g in spec.group_by if g in table.columns]:
        test = spec.select_metric[len("dev_"):] if spec.select_metric.startswith("dev_") else None
        if test in table.columns:
            return test
    if spec.sort in table.columns:
        return spec.sort
    return next((m for m in (spec.metrics or registry.quality_columns(table.columns)) if m in table.columns), "")


def reference_note(spec: LeaderboardSpec) -> list[str]:
    """What the reference columns are: the suite's own words (``reference_source``), nothing added."""
    if not spec.reference:
        return []
    source = (f"their source, as the suite states it: {spec.reference_source.strip()}" if spec.reference_source.strip()
              else "the suite states no source for them (reference_source is empty)")
    return [f"Columns marked {REFERENCE} quote the figures of the suite's reference block; {source}"]


PLACEHOLDERS = "n_image_placeholders"
PLACEHOLDER_MARK = "†"


def placeholder_note(table: pl.DataFrame) -> list[str]:
    """The sentence behind the † mark: rows whose image encoders saw grey placeholders."""
    if PLACEHOLDERS not in table.columns or not (table[PLACEHOLDERS].fill_null(0) > 0).any():
        return []
    return [f"{PLACEHOLDER_MARK} Some items of these trials had no usable picture and were fed a grey placeholder "
            f"(up to {int(table[PLACEHOLDERS].max())} per trial; row column {PLACEHOLDERS}, per split "
            f"{PLACEHOLDERS}_<split>)."]


def _fmt_column(table: pl.DataFrame, column: str, std: str | None = None, digits: int = 3) -> list[str]:
    """``_fmt`` of every value of a column (with its std column, if the table has it), a column at a
    time: for float columns one comprehension with the same text, else ``_fmt`` per value."""
    values = table[column].to_list()
    stds = table[std].to_list() if std in table.columns else None
    floats = table[column].dtype.is_float() and (stds is None or table[std].dtype.is_float())
    if not floats:
        return list(map(_fmt, values, stds or [None] * len(values), [digits] * len(values)))
    one = f"%.{digits}f"  # printf style: the text of f"{v:.{digits}f}", without building the spec per value
    if stds is None:
        if _all_numbers(values):
            return _printf_each(one, values, len(values))
        return ["-" if v is None or v != v else one % v for v in values]
    both = f"{one} ± {one}"
    if _all_numbers(values) and _all_numbers(stds):
        return _printf_each(both, list(chain.from_iterable(zip(values, stds))), len(values))
    return ["-" if v is None or v != v else both % (v, s) if s is not None and s == s else one % v
            for v, s in zip(values, stds)]


def _all_numbers(values: list) -> bool:
    """No None and no NaN among the floats (a NaN, or inf and -inf, make the sum NaN: the slow path)."""
    return None not in values and not math.isnan(sum(values))


def _printf_each(pattern: str, args: list, n: int) -> list[str]:
    """``[pattern % args_of_row for each of n rows]`` in one printf call: the pattern repeated n times,
    one line each (a formatted number never holds a line break), then split."""
    return ((pattern + "\n") * n % tuple(args)).split("\n")[:-1] if n else []


def _count_column(table: pl.DataFrame, column: str) -> list[str]:
    """A count as text, 0 where the table has no value (or no such column)."""
    values = table[column].to_list() if column in table.columns else [None] * table.height
    return [str(v or 0) for v in values]


def _thousands(values: list) -> list[str]:
    """Whole numbers with thousands separators (a mean of parameter counts, truncated), "-" for None."""
    if None in values:
        return [f"{int(v):,}" if v is not None else "-" for v in values]
    return ("{:,}\n" * len(values)).format(*map(int, values)).split("\n")[:-1]


def display_columns(table: pl.DataFrame, spec: LeaderboardSpec) -> tuple[list[str], list[list[str]]]:
    """The leaderboard's headers and its cells as text, one list per column."""
    group_by = table_groups(table, spec)
    metrics = [c for c in table.columns if c in set(spec.metrics or registry.quality_columns(table.columns))]
    cost = [c for c in COST if c in table.columns]
    refs = [c for c in table.columns if c.startswith("ref_")]
    # a reference figure named like a metric sits right after that metric's column; the rest follow the marks
    shown = [c for m in metrics for c in (m, f"ref_{m}") if c == m or c in refs]
    refs = [c for c in refs if c not in shown]
    cis = [m for m in metrics if f"{m}_ci_low" in table.columns]
    mark = [NEAR_BEST] if "near_best" in table.columns else []
    chosen = [a for a in spec.select if a in table.columns and a not in group_by] + \
        [c for c in table.columns if c.startswith("selected_")]
    stopped = ["stopped"] if "stopped" in table.columns and (table["stopped"].max() or 0) > 0 else []
    headers = ["rank", *group_by, *chosen, *shown, *[f"{m} 95% CI" for m in cis], *mark, *refs, *cost, "n",
               "failed", *stopped]
    column = lambda name: table[name].to_list() if name in table.columns else [None] * table.height  # noqa: E731
    marks = [PLACEHOLDER_MARK if p else "" for p in column(PLACEHOLDERS)]
    columns = [[f"{r}{m}" for r, m in zip(column("rank"), marks)], *[list(map(str, column(g))) for g in group_by]]
    columns += [_fmt_column(table, c) for c in chosen]
    columns += [_fmt_column(table, c) if c.startswith("ref_") else _fmt_column(table, c, f"{c}_std") for c in shown]
    columns += [list(map(_fmt_interval, column(f"{m}_ci_low"), column(f"{m}_ci_high"))) for m in cis]
    columns += [list(map(_fmt_mark, column("near_best"), column("best_p")))] if mark else []
    columns += [_fmt_column(table, c) for c in refs]
    columns += [_fmt_column(table, c, digits=1) if c != "n_params" else _thousands(column(c)) for c in cost]
    columns += [_count_column(table, "n"), _count_column(table, "failed")]
    columns += [_count_column(table, "stopped") for _ in stopped]
    headers = [h if not h.startswith("ref_") else f"{h[4:]} {REFERENCE}" for h in headers]
    return headers, columns


def display_rows(table: pl.DataFrame, spec: LeaderboardSpec) -> tuple[list[str], list[list[str]]]:
    """The leaderboard's headers and its cells as text, one list per row."""
    headers, columns = display_columns(table, spec)
    return headers, [list(row) for row in zip(*columns)]


def pivot_tables(rows: pl.DataFrame | pl.LazyFrame, pivot: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(value, headers, body) for the pivot's ``value`` and each of its ``extra_values``: rows = one
    axis, columns = another, cells = mean ± std of the value over the ok rows (the paper's layout).
    One aggregation serves every value; a value the rows lack gets empty headers and body."""
    r, c = pivot["rows"], pivot["columns"]
    values = [pivot.get("value", "accuracy"), *pivot.get("extra_values", [])]
    names = rows.collect_schema().names()
    shown = [v for v in dict.fromkeys(values) if {r, c, v} <= set(names)]
    if not shown:
        return [(v, [], []) for v in values]
    status = "status" in names
    if isinstance(rows, pl.DataFrame):  # one call: values of rows not ok are masked to null, which mean and std skip
        value = lambda v: pl.when(pl.col("status") == "ok").then(pl.col(v)) if status else pl.col(v)  # noqa: E731
        ok = rows
    else:  # a scan reads these columns alone and streams the ok rows
        value = pl.col
        used = rows.select(list(dict.fromkeys([r, c, *shown, *(["status"] if status else [])])))
        ok = used.filter(pl.col("status") == "ok") if status else used
    aggs = [e for i, v in enumerate(shown)
            for e in (value(v).mean().alias(f"__mean_{i}"), value(v).std().alias(f"__std_{i}"))]
    agg = _collected(ok.group_by([r, c]).agg(aggs))
    if agg.is_empty():
        return [(v, [], []) for v in values]
    # a null column value (an option some trials left unset) is a column of its own, last
    cols = sorted(_distinct(agg[c]), key=lambda x: (x is None, isinstance(x, str), 0 if x is None else x))
    row_keys = sorted(_distinct(agg[r]), key=str)
    keys = list(zip(agg[r].to_list(), agg[c].to_list()))
    out = []
    for v in values:
        if v not in shown:
            out.append((v, [], []))
            continue
        i = shown.index(v)
        cells = dict(zip(keys, zip(agg[f"__mean_{i}"].to_list(), agg[f"__std_{i}"].to_list())))
        body = [[str(a)] + [_fmt(*cells[(a, b)]) if (a, b) in cells else "-" for b in cols] for a in row_keys]
        out.append((v, [f"{r} \\ {c} ({v})", *[str(b) for b in cols]], body))
    return out


def _distinct(series: pl.Series) -> list:
    """The distinct values of a short column: in Python (a polars ``unique`` plans a query), but by
    polars where a NaN is among them (Python would count each NaN apart)."""
    values = series.to_list()
    try:
        if not any(v != v for v in values):
            return list(dict.fromkeys(values))
    except TypeError:  # values Python cannot hash
        pass
    return series.unique().to_list()


def pivot_table(rows: pl.DataFrame | pl.LazyFrame, pivot: dict) -> tuple[list[str], list[list[str]]]:
    """The pivot of ``pivot["value"]`` alone (see ``pivot_tables``)."""
    _, headers, body = pivot_tables(rows, {**pivot, "extra_values": []})[0]
    return headers, body


def render_markdown(rows: pl.DataFrame, spec: LeaderboardSpec, predictions: pl.DataFrame | None = None) -> str:
    table = leaderboard_table(rows, spec, predictions)
    out = [f"# {spec.title}", "", github_table_of_columns(*display_columns(table, spec)), ""]
    out.append("Quality columns are test-split means ± standard deviation over seeds; cost columns are means.")
    out += selection_note(spec, table)
    out += significance_note(table, spec)
    out += reference_note(spec)
    out += placeholder_note(table)
    if spec.pivot:
        for value, p_headers, p_body in pivot_tables(rows, spec.pivot):
            if p_body:
                out += ["", f"## {value} by {spec.pivot['rows']} and {spec.pivot['columns']}", "",
                        github_table(p_headers, p_body)]
    failed = failed_lines(rows, spec)
    if failed:
        out += ["", "## Failed trials", "", *failed]
    return "\n".join(out) + "\n"


def _as_python_str(column: str, frame: pl.DataFrame) -> pl.Expr:
    """The column as Python's ``str()`` of each value writes it (None for nulls): text and integers
    as they are, other types mapped over the distinct values, so a float or bool reads as in Python,
    not as polars would cast it."""
    series = frame.get_column(column)
    if series.dtype == pl.String or series.dtype.is_integer():
        return pl.col(column).cast(pl.String).fill_null("None")
    values = [v for v in series.unique().to_list() if v is not None]
    return (pl.col(column).replace_strict(values, [str(v) for v in values], return_dtype=pl.String)
            .fill_null("None"))


def _first_line(error: str | None) -> str:
    return (error or "").splitlines()[0] if error else ""


def _failed_parts(rows: pl.DataFrame | pl.LazyFrame, spec: LeaderboardSpec) -> tuple[pl.DataFrame, list[pl.Expr]]:
    """The failed rows' few columns, and the expressions of their key, labels and error's first line."""
    names = rows.collect_schema().names()
    labels = [g for g in spec.group_by if g in names]
    wanted = list(dict.fromkeys([c for c in ("trial_key", *labels, "seed", "error") if c in names]))
    if "status" not in names:
        return pl.DataFrame(schema={c: pl.String for c in wanted}), [pl.lit("")] * 3
    failed = _collected(rows.select(list(dict.fromkeys([*wanted, "status"]))).filter(pl.col("status") == "failed"))
    parts = [] if labels else [pl.lit(" ")]  # "a=x b=y seed=0", or " seed=0" without labels
    for g in labels:
        parts += [pl.lit(f"{g}="), _as_python_str(g, failed), pl.lit(" ")]
    parts += [pl.lit("seed="), _as_python_str("seed", failed) if "seed" in names else pl.lit("None")]
    if "error" in names:
        errors = [e for e in failed["error"].unique().to_list() if e is not None]
        first = (pl.col("error").replace_strict(errors, [_first_line(e) for e in errors], return_dtype=pl.String)
                 .fill_null(""))
    else:
        first = pl.lit("")
    key = _as_python_str("trial_key", failed) if "trial_key" in names else pl.lit("(no trial_key)")
    return failed, [key, pl.concat_str(parts), first]


def failed_table(rows: pl.DataFrame | pl.LazyFrame, spec: LeaderboardSpec) -> pl.DataFrame:
    """trial_key, labels (axis labels and seed) and first_line (of the error) of every failed trial.

    Only the failed rows' few columns are collected; labels are built by polars expressions, with
    Python ``str()`` applied to distinct values only (no per-row Python).
    """
    failed, (key, labels, first) = _failed_parts(rows, spec)
    if failed.is_empty():  # (literal parts alone would make one row)
        return pl.DataFrame(schema={"trial_key": pl.String, "labels": pl.String, "first_line": pl.String})
    return failed.select(key.alias("trial_key"), labels.alias("labels"), first.alias("first_line"))


def failed_lines(rows: pl.DataFrame | pl.LazyFrame, spec: LeaderboardSpec) -> list[str]:
    """The markdown list of failed trials: "- `key` labels: first line of the error" (see failed_table)."""
    if isinstance(rows, pl.DataFrame):
        return [visible(f"- `{key}` {labels}: {first}") for key, labels, first in _failed_in_memory(rows, spec)]
    failed, (key, labels, first) = _failed_parts(rows, spec)
    if failed.is_empty():
        return []
    line = pl.concat_str([pl.lit("- `"), key, pl.lit("` "), labels, pl.lit(": "), first])
    return list(map(visible, failed.select(line).to_series().to_list()))  # a label's line break or ANSI escape


def failed_trials(rows: pl.DataFrame | pl.LazyFrame, spec: LeaderboardSpec) -> list[tuple[str, str, str]]:
    """(trial key, axis labels and seed, first line of the error) of every failed trial."""
    if isinstance(rows, pl.DataFrame):
        return _failed_in_memory(rows, spec)
    return list(failed_table(rows, spec).iter_rows())


def _failed_in_memory(rows: pl.DataFrame, spec: LeaderboardSpec) -> list[tuple[str, str, str]]:
    """``failed_trials`` of rows already in memory: one mask picks the failed rows (a few percent),
    whose few columns Python then writes as text (``str`` of each value, as in ``failed_table``);
    a lazy scan never comes here, so no Python runs per row of a large table."""
    names = rows.columns
    if "status" not in names:
        return []
    labels = [g for g in spec.group_by if g in names]
    wanted = list(dict.fromkeys([c for c in ("trial_key", *labels, "seed", "error") if c in names]))
    mask = rows.get_column("status") == "failed"
    failed = {c: rows.get_column(c).filter(mask).to_list() for c in wanted}  # Series calls: no query to plan
    n = int(mask.sum())
    column = lambda name, absent: list(map(str, failed[name])) if name in failed else [absent] * n  # noqa: E731
    parts = [[f"{g}={text} " for text in column(g, "")] for g in labels] or [[" "] * n]
    parts.append([f"seed={text}" for text in column("seed", "None")])  # " seed=0" without labels
    errors = failed.get("error", [None] * n)
    first = {e: _first_line(e) for e in set(errors)}  # one error text is often shared by many trials
    return list(zip(column("trial_key", "(no trial_key)"), map("".join, zip(*parts)), map(first.__getitem__, errors)))


def render_csv(rows: pl.DataFrame, spec: LeaderboardSpec, predictions: pl.DataFrame | None = None) -> str:
    return leaderboard_table(rows, spec, predictions).write_csv()


def render_html(rows: pl.DataFrame, spec: LeaderboardSpec, images: dict[str, str] | None = None,
                predictions: pl.DataFrame | None = None) -> str:
    """One self-contained page (tables, plus plots embedded as data URIs): bench/reporting/html_page.py."""
    from bench.reporting.html_page import render_page

    return render_page(rows, spec, images, predictions)


def spec_from_suite(suite, title: str | None = None) -> LeaderboardSpec:
    """Default grouping: every matrix and search axis except the seed."""
    lb = suite.leaderboard
    search_axes = list(suite.search.space) if suite.search else []
    axes = [a for a in suite.matrix if a != "seed"]
    metric, mode = search_selection(suite)
    return LeaderboardSpec(group_by=lb.group_by or axes, sort=lb.sort or task_sort_metric(suite.trial),
                           metrics=lb.metrics,
                           reference=suite.reference, reference_source=suite.reference_source,
                           pivot=lb.pivot.model_dump() if lb.pivot else None, title=title or f"{suite.name} leaderboard",
                           select=[a for a in search_axes if a not in (lb.group_by or [])], select_metric=metric,
                           select_mode=mode)


def search_selection(suite) -> tuple[str | None, str]:
    """The dev metric (and mode) that picks a search's configuration: the scheduler's, else the
    trials' selection metric, else dev macro-F1 (classification) or dev ndcg@k (matching)."""
    if suite.search is None or not suite.search.space:
        return None, "max"
    if suite.search.scheduler is not None:
        return suite.search.scheduler.metric, suite.search.scheduler.mode
    selection = suite.trial.get("selection")
    if isinstance(selection, dict) and selection.get("metric"):
        return selection["metric"], selection.get("mode", "max")
    return task_selection_metric(suite.trial), "max"


def suite_task(trial: dict):
    """The trial's task plugin, built with the suite's task options (a task that cannot be built is
    an error naming trial.task)."""
    from bench.api.interfaces import BuildContext
    from bench.api.plugins import get_registry

    task = trial.get("task", "classification")
    name, options = (task.get("name"), task.get("options")) if isinstance(task, dict) else (task, None)
    return get_registry().get("task", name, field="trial.task.name").build(options, BuildContext(),
                                                                        field="trial.task.options")


def task_selection_metric(trial: dict) -> str:
    """The dev metric the trial's task selects by (``Task.selection_metric``)."""
    return suite_task(trial).selection_metric((trial.get("eval") or {}).get("k", 10))


def task_sort_metric(trial: dict) -> str | None:
    """A task that declares metrics of its own ranks by its main metric; the built-in tasks declare
    none and rank by the registry's first quality column the rows have (None here)."""
    task = suite_task(trial)
    if not task.metrics:
        return None
    return task.main_metric.replace("{k}", str((trial.get("eval") or {}).get("k", 10)))
