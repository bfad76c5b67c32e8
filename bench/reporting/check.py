"""The regression check: a run's metrics against a baseline, with a known false-alarm rate and power.

On CPU a trial is reproducible from its seed, and every seed of a group is tested on the same
items, so the only noise between a baseline and a healthy run is which seeds trained the models.
Per group and metric, the run's mean over its S_run seeds is compared with the baseline's mean
over its S_base seeds (both on the same test items: item sampling cancels out). Under "nothing
changed but the seeds" the difference D has standard error

    se = sigma x sqrt(1 / S_base + 1 / S_run),   sigma = max(baseline seed std, flip_std)

(flip_std, from the per-item predictions, is a floor that a lucky low spread over the baseline's
seeds cannot undercut). A metric regresses when its drop exceeds

    allowed = max(floor, t(1 - alpha / tests; S_base - 1) x se, resampled)

one-sided, with the false-alarm rate alpha shared among the (group, metric) tests (Bonferroni).
``resampled`` is the same quantile of D taken from the baseline's own seed values (S_run and
S_base seeds drawn with replacement): a metric whose seed noise is skewed or heavy-tailed (tail
macro-F1 when a seed now and then misses a rare label) gets the margin its values show, not the
normal one. A drop of ``detectable = allowed + z(power) x se`` or more is caught with
probability ``power``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from bench.errors import BenchError
from bench.metrics import registry
from bench.reporting.baseline import (REGENERATE, Baseline, MetricBaseline, failed_trials, group_key, metric_values,
                                      ok_rows, rounded, split_groups, versions_from_rows)


RESAMPLES = 20_000  # the resampled quantile at alpha / tests = 0.005 rests on ~100 draws beyond it
RESAMPLE_SEED = 0  # fixed: the same baseline and run always get the same margin


def thresholds(sigma: float, n_base: int, n_run: int, tests: int, alpha: float, power: float,
               floor: float, values: list[float] | None = None) -> tuple[float, float, float]:
    """(allowed drop, detectable drop, standard error) of the difference of two seed means.

    ``values``: the baseline's value per seed; with them the margin is also never below the
    resampled one (`resampled_drop`)."""
    from scipy import stats

    se = sigma * math.sqrt(1 / n_base + 1 / max(n_run, 1))
    df = max(n_base - 1, 1)
    critical = float(stats.t.ppf(1 - alpha / max(tests, 1), df))
    allowed = max(floor, critical * se)
    if values is not None and len(values) > 1:
        allowed = max(allowed, resampled_drop(values, max(n_run, 1), alpha / max(tests, 1)))
    return allowed, allowed + float(stats.norm.ppf(power)) * se, se


def resampled_drop(values: list[float], n_run: int, level: float) -> float:
    """The drop of a run's mean below the baseline's mean that healthy code exceeds with probability
    ``level``, with both means drawn from the baseline's seed values (the run's ``n_run`` seeds
    and the baseline's own number, with replacement): the seed noise as it is, skew and all."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(RESAMPLE_SEED)
    run = values[rng.integers(0, len(values), (RESAMPLES, n_run))].mean(1)
    base = values[rng.integers(0, len(values), (RESAMPLES, len(values)))].mean(1)
    drops = base - run
    return float(max(np.quantile(drops, 1 - level), np.quantile(-drops, 1 - level), 0.0))


@dataclass
class Finding:
    group: str
    metric: str
    baseline: MetricBaseline | None = None
    current: float | None = None
    seeds: int | None = None  # the run's seeds with a value
    allowed: float | None = None
    detectable: float | None = None
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
    passed: list[Finding] = field(default_factory=list)
    checked: int = 0
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.0
    power: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.regressions


def compare(baseline: Baseline, rows: pl.DataFrame, *, items: pl.DataFrame | None = None,
            run_items: pl.DataFrame | None = None, floors: dict[str, float] | None = None,
            floor: float | None = None, alpha: float | None = None) -> CheckReport:
    """Every metric of every baseline group against the run's rows.

    Regressions: a drop beyond ``allowed``, a metric or group the run lacks, a failed trial, fewer
    seeds than the suite runs, test items other than the baseline's. Improvements beyond the same
    margin are listed, never failures. ``items`` / ``run_items``: the baseline's and the run's
    per-item tables (bench.reporting.baseline.item_table), for the item checks.
    """
    alpha = baseline.rule.alpha if alpha is None else alpha
    report = CheckReport(alpha=alpha, power=baseline.rule.power)
    group_by = baseline.group_by
    failed = failed_trials(rows)
    failed_groups: dict[str, int] = {}
    for r in failed.iter_rows(named=True):
        key = group_key({g: r.get(g) for g in group_by})
        failed_groups[key] = failed_groups.get(key, 0) + 1
        error = (r.get("error") or "").strip().splitlines()
        report.regressions.append(Finding(key, "(trial)", why=f"seed {r.get('seed')} failed: "
                                                              f"{error[0] if error else 'no error recorded'}"))
    current = split_groups(ok_rows(rows), group_by)
    tests = baseline.tests
    for key, base in sorted(baseline.groups.items()):
        if key not in current:
            if key not in failed_groups:
                report.regressions.append(Finding(key, "(group)", why="group missing from the run"))
            continue
        part = current[key][1]
        ran = part.height + failed_groups.get(key, 0)
        if ran < baseline.rule.run_seeds:
            report.regressions.append(Finding(key, "(seeds)", why=f"{ran} of the suite's {baseline.rule.run_seeds} "
                                                                  "seeds ran"))
        for metric, stats in sorted(base.metrics.items()):
            report.checked += 1
            values = metric_values(part, metric)
            chosen_floor = (floors or {}).get(metric, baseline.floor(metric) if floor is None else floor)
            allowed, detectable, _ = thresholds(max(stats.std, stats.flip_std or 0.0), stats.n, max(len(values), 1),
                                                tests, alpha, baseline.rule.power, chosen_floor, stats.values)
            finding = Finding(key, metric, stats, None, len(values), rounded(allowed), rounded(detectable))
            if not len(values):
                finding.why = "metric missing from the run"
                report.regressions.append(finding)
                continue
            finding.current = rounded(values.mean())
            gain = (finding.current - stats.mean) * (1 if registry.higher_is_better(metric) else -1)
            if gain < -allowed - 1e-12:
                finding.why = "dropped by more than the allowed drop"
                report.regressions.append(finding)
            elif gain > allowed + 1e-12:
                finding.why = "better than the baseline by more than the allowed drop"
                report.improvements.append(finding)
            else:
                report.passed.append(finding)
    for key in sorted(set(current) - set(baseline.groups)):
        report.notes.append(f"group '{key}' is not in the baseline (not checked)")
    if items is not None and run_items is not None:
        item_findings(report, baseline, items, run_items)
    return report


def item_findings(report: CheckReport, baseline: Baseline, items: pl.DataFrame, run_items: pl.DataFrame) -> None:
    """The run must score the baseline's test items (same ids, same true labels); seeds the
    baseline also ran are compared item for item (a note says how many reproduced exactly)."""
    label = ["true_label"] if "true_label" in items.columns and "true_label" in run_items.columns else []
    reproduced, shared = 0, 0
    for key in sorted(baseline.groups):
        base = items.filter(pl.col("group") == key)
        run = run_items.filter(pl.col("group") == key)
        if base.is_empty() or run.is_empty():
            continue
        expected = base.filter(pl.col("seed") == base["seed"][0]).select("item_id", *label).sort("item_id")
        for seed, part in run.partition_by("seed", as_dict=True).items():
            got = part.select("item_id", *label).sort("item_id")
            if not got.equals(expected):
                report.regressions.append(Finding(
                    key, "(test items)", why=f"seed {seed[0]} scored {got.height} test items, the baseline "
                    f"{expected.height}; {_item_difference(expected, got)}: the means are not comparable"))
                break
        predicted = [c for c in ("pred_label", "top_hit") if c in base.columns and c in run.columns]
        for (seed,), part in run.partition_by("seed", as_dict=True).items():
            same_seed = base.filter(pl.col("seed") == seed)
            if same_seed.is_empty():
                continue
            shared += 1
            cols = ["item_id", *label, *predicted]
            reproduced += int(same_seed.select(cols).sort("item_id").equals(part.select(cols).sort("item_id")))
    if shared:
        report.notes.append(f"{reproduced} of {shared} trials whose seed the baseline also ran reproduced its "
                            "test predictions item for item")


def _item_difference(expected: pl.DataFrame, got: pl.DataFrame) -> str:
    gone = expected.join(got, on="item_id", how="anti").height
    new = got.join(expected, on="item_id", how="anti").height
    relabelled = 0
    if "true_label" in expected.columns:
        both = expected.join(got, on="item_id", suffix="_run")
        relabelled = both.filter(pl.col("true_label") != pl.col("true_label_run")).height
    return f"{gone} items gone, {new} new, {relabelled} with another true label"


def check_comparable(baseline: Baseline, rows: pl.DataFrame, file=None) -> None:
    """Refuse a check that could only pass vacuously: no groups, no metrics, none in common with the run."""
    metrics = sorted({m for g in baseline.groups.values() for m in g.metrics})
    if not baseline.groups or not metrics:
        raise BenchError("the baseline has no " + ("groups" if not baseline.groups else "metrics") +
                         "; a check against it would compare nothing and pass", file=file, field="groups",
                         fix=REGENERATE)
    ok = ok_rows(rows)
    common = [m for m in metrics if m in ok.columns and ok[m].cast(pl.Float64, strict=False).drop_nulls().len()]
    if not common and not failed_trials(rows).height:
        raise BenchError(f"the run has none of the baseline's metrics ({', '.join(metrics)}); nothing to compare",
                         file=file, field="groups", fix="check the suite against the baseline made from it")


def version_notes(baseline: Baseline, rows: pl.DataFrame) -> list[str]:
    now = versions_from_rows(rows)
    return [f"{name} {old} in the baseline, {now[name]} now" for name, old in sorted(baseline.versions.items())
            if name in now and now[name] != old]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(findings: list[Finding], power: float) -> str:
    from tabulate import tabulate

    body = [[f.group, f.metric,
             "-" if f.baseline is None else f"{f.baseline.mean:.4f} ± {f.baseline.std:.4f} ({f.baseline.n} seeds)",
             "-" if f.current is None else f"{f.current:.4f} ({f.seeds} seeds)",
             "-" if f.change is None else f"{f.change:+.4f}", _fmt(f.allowed), _fmt(f.detectable), f.why]
            for f in findings]
    return tabulate(body, headers=["group", "metric", "baseline", "run", "change", "allowed drop",
                                   f"detectable drop ({power:.0%})", "why"],
                    tablefmt="github", disable_numparse=True)


def failure_lines(report: CheckReport) -> list[str]:
    """One sentence per regression: group, metric, baseline, new value, allowed and detectable drop."""
    out = []
    for f in report.regressions:
        if f.baseline is None or f.current is None:
            out.append(f"REGRESSION {f.group} {f.metric}: {f.why}")
        else:
            out.append(f"REGRESSION {f.group} {f.metric}: baseline {f.baseline.mean:.4f} ({f.baseline.n} seeds), "
                       f"now {f.current:.4f} ({f.seeds} seeds), change {f.change:+.4f}; allowed drop "
                       f"{f.allowed:.4f}, detectable drop {f.detectable:.4f}")
    return out


def render_report(report: CheckReport) -> str:
    out = []
    if report.regressions:
        out += [f"## Regressions ({len(report.regressions)})", "", table(report.regressions, report.power), ""]
    if report.improvements:
        out += [f"## Improved ({len(report.improvements)}): consider refreshing the baseline", "",
                table(report.improvements, report.power), ""]
    if report.passed:
        out += [f"## Within the allowed drop ({len(report.passed)})", "", table(report.passed, report.power), ""]
    out += failure_lines(report)
    verdict = (f"FAILED: {len(report.regressions)} regressions" if report.regressions else
               "ok: no metric dropped by more than its allowed drop")
    out.append(f"{verdict} ({report.checked} group metrics checked; false-alarm rate {report.alpha:g} over all "
               f"of them when only the seeds change; a drop of the detectable size is caught with probability "
               f"{report.power:g})")
    return "\n".join(out) + "\n"
