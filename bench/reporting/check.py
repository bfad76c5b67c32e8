"""Baselines and regression checks, as pure functions of stored trial rows.

A baseline records, per leaderboard group (the suite's axes except seed), the mean, the seed
spread and the seed count of every quality metric. A check fails a metric when its mean falls
below the baseline mean by more than ``abs_floor + k x baseline std``: the seed spread makes
noisy metrics loose and stable ones tight without tuning each by hand, and the floor keeps a
zero spread from failing on the last decimal. Baselines are JSON with sorted keys and rounded
floats so that a refreshed baseline reads as a small diff in review.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import BenchError
from bench.reporting.leaderboard import QUALITY, spec_from_suite
from bench.metrics.retrieval_columns import upgrade_legacy_rows
from bench.reporting.provenance import PACKAGES

FORMAT = 1
DEFAULT_ABS_FLOOR = 0.02  # quality metrics live in [0, 1]
DEFAULT_K = 3.0
DIGITS = 6
ALL = "(all)"
REGENERATE = "regenerate it with `bench baseline SUITE --out BASELINE.json` (or restore it from git)"

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN mean would pass every comparison


class MetricTolerance(BaseModel):
    model_config = Strict
    abs_floor: float = Field(DEFAULT_ABS_FLOOR, ge=0)
    k: float = Field(DEFAULT_K, ge=0, description="multiplier of the baseline's seed std")
    higher_is_better: bool = True


class MetricStats(BaseModel):
    model_config = Strict
    mean: float
    std: float = Field(ge=0, description="sample std over seeds; 0 with one seed")
    n: int = Field(ge=1, description="seeds with a value")


class GroupBaseline(BaseModel):
    model_config = Strict
    axes: dict[str, Any]
    seeds: int = Field(ge=1, description="successful trials in the group")
    metrics: dict[str, MetricStats]


class Baseline(BaseModel):
    model_config = Strict
    format: Literal[1] = FORMAT
    suite: str
    suite_hash: str
    subset: int | None = Field(None, ge=1)
    group_by: list[str]
    versions: dict[str, str] = Field(default_factory=dict)
    tolerance: dict[str, MetricTolerance]
    groups: dict[str, GroupBaseline]


@dataclass
class Finding:
    group: str
    metric: str
    baseline: MetricStats | None = None
    current: float | None = None
    allowed: float | None = None
    why: str = ""

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline.mean


@dataclass
class CheckReport:
    regressions: list[Finding] = field(default_factory=list)
    improvements: list[Finding] = field(default_factory=list)
    checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions


# ---- rows -> groups ---------------------------------------------------------------------------

def group_by_of(suite) -> list[str]:
    """The leaderboard's grouping: every matrix and search axis except the seed."""
    return spec_from_suite(suite).group_by


def group_key(axes: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in axes.items()) or ALL


def _ok(rows: pl.DataFrame) -> pl.DataFrame:
    rows = upgrade_legacy_rows(rows)  # retrieval rows stored under the old metric names
    return rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows


def quality_metrics(rows: pl.DataFrame) -> list[str]:
    ok = _ok(rows)
    return [m for m in QUALITY if m in ok.columns and ok[m].dtype.is_numeric() and ok[m].drop_nulls().len() > 0]


def _groups(rows: pl.DataFrame, group_by: list[str]) -> dict[str, tuple[dict[str, Any], pl.DataFrame]]:
    """Group key -> (axes, rows); a grouping column the rows lack gives each row value None."""
    if rows.is_empty():
        return {}
    cols = [pl.col(g) if g in rows.columns else pl.lit(None).alias(g) for g in group_by]
    keyed = rows.with_columns(cols) if cols else rows
    if not group_by:
        return {ALL: ({}, keyed)}
    out = {}
    for part in keyed.partition_by(group_by, maintain_order=True):
        axes = {g: part[g][0] for g in group_by}
        out[group_key(axes)] = (axes, part)
    return out


def _round(value: float) -> float:
    return round(float(value), DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def metric_stats(values: pl.Series) -> MetricStats | None:
    values = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    if values.len() == 0:
        return None
    std = float(values.std()) if values.len() > 1 else 0.0
    return MetricStats(mean=_round(values.mean()), std=_round(std), n=values.len())


def summarise(rows: pl.DataFrame, group_by: list[str], metrics: list[str]) -> dict[str, GroupBaseline]:
    """Per group: successful seeds and mean / std / n of each metric over them."""
    out = {}
    for key, (axes, part) in _groups(_ok(rows), group_by).items():
        stats = {}
        for m in metrics:
            found = metric_stats(part[m].cast(pl.Float64, strict=False)) if m in part.columns else None
            if found is not None:
                stats[m] = found
        out[key] = GroupBaseline(axes=axes, seeds=part.height, metrics=stats)
    return out


def failed_trials(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.filter(pl.col("status") != "ok") if "status" in rows.columns else rows.head(0)


def versions_from_rows(rows: pl.DataFrame) -> dict[str, str]:
    """Package versions the rows were produced with (from the provenance columns)."""
    out = {}
    for name in (*PACKAGES, "python"):
        col = "python" if name == "python" else f"v_{name.replace('-', '_')}"
        if col in rows.columns and rows[col].drop_nulls().len():
            out[name] = str(rows[col].drop_nulls()[0])
    return out


# ---- baseline ---------------------------------------------------------------------------------

def build_baseline(rows: pl.DataFrame, *, suite: str, suite_hash: str, group_by: list[str], subset: int | None,
                   abs_floors: dict[str, float] | None = None, k: float | None = None,
                   abs_floor: float | None = None) -> Baseline:
    """A baseline from a run's successful rows (the caller rejects runs with failed trials).

    ``abs_floor`` is every metric's floor, ``abs_floors`` one metric's (wins), ``k`` every metric's multiplier.
    """
    metrics = quality_metrics(rows)
    floor = DEFAULT_ABS_FLOOR if abs_floor is None else abs_floor
    tolerance = {m: MetricTolerance(abs_floor=(abs_floors or {}).get(m, floor),
                                    k=DEFAULT_K if k is None else k) for m in metrics}
    return Baseline(suite=suite, suite_hash=suite_hash, subset=subset, group_by=list(group_by),
                    versions=versions_from_rows(rows), tolerance=tolerance,
                    groups=summarise(rows, group_by, metrics))


def dump_baseline(baseline: Baseline) -> str:
    return json.dumps(baseline.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a baseline file" if path.is_dir() else "baseline file not found"
        raise BenchError(what, file=path, field="--baseline",
                         fix="pass the JSON file written by `bench baseline SUITE --out BASELINE.json`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BenchError("the baseline file is not UTF-8 text", file=path, fix=REGENERATE) from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"not valid JSON: {exc.msg}", file=path, field=f"line {exc.lineno}, column {exc.colno}",
                         fix=REGENERATE) from None
    try:
        return Baseline.model_validate(data)
    except ValidationError as exc:
        from bench.config.validation import describe_validation_error

        raise BenchError(f"not a mic-bench baseline: {describe_validation_error(exc, Baseline)}", file=path,
                         fix=REGENERATE) from None


def parse_tolerances(pairs: tuple[str, ...] | list[str], known: list[str] | None = None) -> dict[str, float]:
    """``--tolerance METRIC=ABS`` pairs; a metric the baseline does not check is an error, not a no-op."""
    out = {}
    for pair in pairs:
        metric, sep, raw = pair.partition("=")
        try:
            value = float(raw) if sep and metric.strip() else math.nan
        except ValueError:
            value = math.nan
        if not (value >= 0 and math.isfinite(value)):  # NaN or inf would let every drop pass
            raise BenchError(f"'{pair}' is not METRIC=ABS with ABS a finite number >= 0", field="--tolerance",
                             fix="write e.g. --tolerance accuracy=0.05")
        metric = metric.strip()
        if known is not None and metric not in known:
            raise BenchError(f"the baseline has no metric '{metric}'", field="--tolerance",
                             fix=f"use one of: {', '.join(known) or '(none)'}")
        out[metric] = value
    return out


# ---- check ------------------------------------------------------------------------------------

def effective_tolerance(baseline: Baseline, metric: str, abs_floors: dict[str, float] | None = None,
                        k: float | None = None, abs_floor: float | None = None) -> MetricTolerance:
    """The recorded tolerance, overridden by the command line: one metric's floor, every floor, k."""
    update: dict[str, Any] = {}
    if abs_floor is not None:
        update["abs_floor"] = abs_floor
    if abs_floors and metric in abs_floors:
        update["abs_floor"] = abs_floors[metric]
    if k is not None:
        update["k"] = k
    return baseline.tolerance.get(metric, MetricTolerance()).model_copy(update=update)


def compare(baseline: Baseline, rows: pl.DataFrame, *, abs_floors: dict[str, float] | None = None,
            k: float | None = None, abs_floor: float | None = None) -> CheckReport:
    """Every metric of every baseline group against the run's rows.

    Regressions: a metric beyond its tolerance in the bad direction, a metric or group the run
    lacks, a failed trial, fewer seeds than the baseline. Improvements beyond tolerance are
    reported, never failures.
    """
    report = CheckReport()
    group_by = baseline.group_by
    failed = failed_trials(rows)
    failed_groups: dict[str, int] = {}
    for r in failed.iter_rows(named=True):
        key = group_key({g: r.get(g) for g in group_by})
        failed_groups[key] = failed_groups.get(key, 0) + 1
        error = (r.get("error") or "").strip().splitlines()
        report.regressions.append(Finding(key, "(trial)", why=f"seed {r.get('seed')} failed: "
                                                              f"{error[0] if error else 'no error recorded'}"))
    current = summarise(rows, group_by, list({m for g in baseline.groups.values() for m in g.metrics}))
    for key, base in sorted(baseline.groups.items()):
        run = current.get(key)
        if run is None:
            if key not in failed_groups:
                report.regressions.append(Finding(key, "(group)", why="group missing from the run"))
            continue
        ran = run.seeds + failed_groups.get(key, 0)
        if ran < base.seeds:
            report.regressions.append(Finding(key, "(seeds)", why=f"{ran} of the baseline's {base.seeds} seeds ran"))
        for metric, stats in sorted(base.metrics.items()):
            report.checked += 1
            tol = effective_tolerance(baseline, metric, abs_floors, k, abs_floor)
            allowed = _round(tol.abs_floor + tol.k * stats.std)
            now = run.metrics.get(metric)
            if now is None:
                report.regressions.append(Finding(key, metric, stats, None, allowed, "metric missing from the run"))
                continue
            gain = (now.mean - stats.mean) * (1 if tol.higher_is_better else -1)
            finding = Finding(key, metric, stats, now.mean, allowed)
            if gain < -allowed - 1e-12:
                finding.why = "worse than the baseline beyond tolerance"
                report.regressions.append(finding)
            elif gain > allowed + 1e-12:
                finding.why = "better than the baseline beyond tolerance"
                report.improvements.append(finding)
    for key in sorted(set(current) - set(baseline.groups)):
        report.notes.append(f"group '{key}' is not in the baseline (not checked)")
    return report


def check_comparable(baseline: Baseline, rows: pl.DataFrame, file: str | Path | None = None) -> None:
    """Refuse a check that could only pass vacuously: no groups, no metrics, none in common with the run."""
    metrics = sorted({m for g in baseline.groups.values() for m in g.metrics})
    if not baseline.groups or not metrics:
        raise BenchError("the baseline has no " + ("groups" if not baseline.groups else "metrics") +
                         "; a check against it would compare nothing and pass", file=file, field="groups",
                         fix=REGENERATE)
    ok = _ok(rows)
    common = [m for m in metrics if m in ok.columns and ok[m].cast(pl.Float64, strict=False).drop_nulls().len()]
    if not common and not failed_trials(rows).height:
        raise BenchError(f"the run has none of the baseline's metrics ({', '.join(metrics)}); nothing to compare",
                         file=file, field="groups", fix="check the suite against the baseline made from it")


def version_notes(baseline: Baseline, rows: pl.DataFrame) -> list[str]:
    now = versions_from_rows(rows)
    return [f"{name} {old} in the baseline, {now[name]} now" for name, old in sorted(baseline.versions.items())
            if name in now and now[name] != old]


def render_report(report: CheckReport) -> str:
    from tabulate import tabulate

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    def table(findings: list[Finding]) -> str:
        body = [[f.group, f.metric,
                 "-" if f.baseline is None else f"{f.baseline.mean:.4f} ± {f.baseline.std:.4f} (n={f.baseline.n})",
                 fmt(f.current), "-" if f.change is None else f"{f.change:+.4f}",
                 "-" if f.allowed is None else f"±{f.allowed:.4f}", f.why] for f in findings]
        return tabulate(body, headers=["group", "metric", "baseline", "run", "change", "allowed", "why"],
                        tablefmt="github", disable_numparse=True)

    out = []
    if report.regressions:
        out += [f"## Regressions ({len(report.regressions)})", "", table(report.regressions), ""]
    if report.improvements:
        out += [f"## Improved ({len(report.improvements)}): consider refreshing the baseline", "",
                table(report.improvements), ""]
    verdict = (f"FAILED: {len(report.regressions)} regressions" if report.regressions else
               "ok: every metric within tolerance")
    out.append(f"{verdict} ({report.checked} group metrics checked; allowed = abs_floor + k x baseline seed std)")
    return "\n".join(out) + "\n"
