"""`bench baseline` and `bench check`: record a suite's numbers, then fail CI when they drop."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bench.errors import BenchError

TOLERANCE_HELP = "absolute floor of one metric's tolerance, METRIC=ABS (repeatable; wins over --abs-floor)"
FLOOR_HELP = "absolute floor of every metric's tolerance (default 0.02 in a new baseline)"
K_HELP = "multiplier of the baseline's seed std in every tolerance"


class FiniteFloat(click.FloatRange):
    """A float >= 0 that is neither nan nor inf: either would make every comparison pass."""

    name = "finite float"

    def convert(self, value, param, ctx):
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = FiniteFloat(min=0)


def _rows(loaded, registry, *, from_run: Path | None, run_dir: Path | None, max_concurrent: int | None,
          cache_dir: Path | None, quiet: bool):
    """The suite's rows: a fresh run (after the dataset preflight), or an earlier run folder's."""
    import polars as pl

    keys = [t.key for t in loaded.trials]
    if from_run is not None:
        from bench.reporting.results import load_run

        if run_dir is not None:
            raise BenchError("--from-run reads an earlier run, --run-dir starts a new one; pass one of them",
                             field="--run-dir", fix="drop --run-dir, or drop --from-run to run the suite")
        _, rows = load_run(from_run)
        rows = rows.filter(pl.col("trial_key").is_in(keys)) if "trial_key" in rows.columns else rows.head(0)
        if rows.is_empty():
            subset = loaded.trials[0].config.get("subset") if loaded.trials else None
            raise BenchError(f"the run folder has no trials of suite '{loaded.suite.name}' as loaded now "
                             f"(subset {subset or 'none'})", file=from_run, field="--from-run",
                             fix="pass a run folder of this suite, with the --subset it ran with")
        return rows, Path(from_run)
    if run_dir is not None and any((run_dir / "rows").glob("*.parquet")):
        raise BenchError("the run folder already holds trial rows; a check needs a fresh run", file=run_dir,
                         field="--run-dir", fix="pass a new folder, or --from-run to use the rows it holds")
    from bench.running.preflight import check_writable_folder, preflight
    from bench.running.runner import preflight_ray, run_suite

    from bench.paths import cache_dir as make_cache_dir

    check_writable_folder(run_dir if run_dir is not None else Path("results"), "--run-dir")
    cache = str(make_cache_dir(cache_dir).resolve()) if cache_dir else None  # created with its marker
    datasets = preflight(loaded, registry, cache_dir=cache)
    preflight_ray(loaded, None)
    summary = run_suite(loaded, registry, run_dir=run_dir, max_concurrent=max_concurrent, cache_dir=cache, quiet=quiet,
                        datasets=datasets)
    return summary.rows, summary.run_dir


def _load(suite_file: Path, subset: int | None):
    from bench.plugins import get_registry
    from bench.config.suite import load_suite
    registry = get_registry()
    return load_suite(suite_file, registry, subset=subset), registry


def _common(func):
    for option in reversed([
        click.option("--subset", type=click.IntRange(min=1), default=None, help="cap every split at N items"),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="write the run into this new folder (default: results/<suite>/<time>)"),
        click.option("--from-run", type=click.Path(path_type=Path), default=None,
                     help="use the rows of an earlier run folder instead of running"),
        click.option("--tolerance", "tolerances", multiple=True, metavar="METRIC=ABS", help=TOLERANCE_HELP),
        click.option("--abs-floor", type=FINITE, default=None, help=FLOOR_HELP),
        click.option("--k", type=FINITE, default=None, help=K_HELP),
        click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="trials at once"),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="cache folder (default $MIC_BENCH_CACHE)"),
        click.option("--quiet", is_flag=True, help="no progress lines"),
    ]):
        func = option(func)
    return func


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="the baseline JSON to write (commit it beside the suite)")
@_common
def baseline(suite_file, out_file, subset, run_dir, from_run, tolerances, abs_floor, k, max_concurrent, cache_dir,
             quiet):
    """Run SUITE_FILE (or read --from-run) and write its per-group metric baseline as JSON."""
    from bench.reporting.check import build_baseline, dump_baseline, failed_trials, group_by_of, parse_tolerances
    from bench.reporting.leaderboard import QUALITY
    from bench.paths import atomic_write_text

    abs_floors = parse_tolerances(tolerances)
    loaded, registry = _load(suite_file, subset)
    rows, source = _rows(loaded, registry, from_run=from_run, run_dir=run_dir, max_concurrent=max_concurrent,
                         cache_dir=cache_dir, quiet=quiet)
    failed = failed_trials(rows)
    missing = len(loaded.trials) - rows.height
    if failed.height or missing:
        lines = [f"  {r['trial_key']} seed={r.get('seed')}: {((r.get('error') or '').strip().splitlines() or [''])[0]}"
                 for r in failed.iter_rows(named=True)]
        click.echo("\n".join([f"no baseline written: {failed.height} trials failed, {missing} did not run "
                              f"(run folder: {source})", *lines]), err=True)
        sys.exit(1)
    result = build_baseline(rows, suite=loaded.suite.name, suite_hash=loaded.text_hash,
                            group_by=group_by_of(loaded.suite), subset=subset, abs_floors=abs_floors, k=k,
                            abs_floor=abs_floor)
    if not result.groups or not result.tolerance:
        raise BenchError(f"the run has no quality metric to record ({', '.join(QUALITY)}); a baseline without "
                         "one would let every check pass", file=source, fix="run a suite that reports metrics")
    unknown = sorted(set(abs_floors) - set(result.tolerance))
    if unknown:
        raise BenchError(f"the run has no metric '{unknown[0]}'", field="--tolerance",
                         fix=f"use one of: {', '.join(result.tolerance)}")
    atomic_write_text(out_file, dump_baseline(result))
    click.echo(f"wrote {out_file}: {len(result.groups)} groups x {len(result.tolerance)} metrics "
               f"from {rows.height} trials (run folder: {source})")


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_file", type=click.Path(path_type=Path), required=True,
              help="the JSON written by `bench baseline`")
@_common
def check(suite_file, baseline_file, subset, run_dir, from_run, tolerances, abs_floor, k, max_concurrent, cache_dir,
          quiet):
    """Run SUITE_FILE and compare every quality metric with the baseline.

    Exit 0: all within tolerance; 1: regressions (table printed); 2: bad input.
    """
    from bench.reporting.check import (check_comparable, compare, parse_tolerances, read_baseline, render_report,
                             version_notes)

    base = read_baseline(baseline_file)
    if not base.groups or not any(g.metrics for g in base.groups.values()):
        check_comparable(base, _empty_rows(), baseline_file)  # refuses before any training
    abs_floors = parse_tolerances(tolerances, known=sorted(base.tolerance))
    if subset is not None and subset != base.subset:
        raise BenchError(f"--subset {subset} differs from the baseline's subset ({base.subset or 'none'}); "
                         "the numbers would not be comparable", field="--subset",
                         fix="drop --subset to use the baseline's, or regenerate the baseline with this subset")
    loaded, registry = _load(suite_file, base.subset)
    if loaded.suite.name != base.suite:
        raise BenchError(f"the baseline is for suite '{base.suite}', not '{loaded.suite.name}'", file=baseline_file,
                         field="suite", fix="pass the baseline of this suite (suites/ci/baselines/<suite>.json)")
    if loaded.text_hash != base.suite_hash:
        click.echo(f"warning: {suite_file} changed since the baseline was made (suite hash {loaded.text_hash}, "
                   f"baseline {base.suite_hash}); if the change is meant to move the numbers, regenerate the "
                   "baseline", err=True)
    rows, source = _rows(loaded, registry, from_run=from_run, run_dir=run_dir, max_concurrent=max_concurrent,
                         cache_dir=cache_dir, quiet=quiet)
    for note in version_notes(base, rows):
        click.echo(f"note: {note}", err=True)
    check_comparable(base, rows, baseline_file)
    report = compare(base, rows, abs_floors=abs_floors, k=k, abs_floor=abs_floor)
    if report.checked == 0 and report.ok:
        raise BenchError("the check compared no metric; it cannot pass", file=baseline_file, field="groups",
                         fix="check the suite against the baseline made from it")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{base.suite}: {rows.height} trials (run folder: {source}) against {baseline_file}")
    click.echo(render_report(report), nl=False)
    sys.exit(0 if report.ok else 1)


def _empty_rows():
    import polars as pl

    return pl.DataFrame({"status": pl.Series([], dtype=pl.Utf8)})
