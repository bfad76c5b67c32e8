"""The `bench` command line."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from bench.errors import BenchError
from bench.reporting.trackers import TRACKER_NAMES
from bench.reporting.visible_text import visible


class BenchGroup(click.Group):
    """Prints BenchErrors as one clear message (exit 2); --debug shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {visible(exc.render(), newlines=True)}", err=True)  # control characters escaped
            sys.exit(exc.exit_code)


@click.group(cls=BenchGroup)
@click.option("--debug", is_flag=True, help="show tracebacks for errors")
@click.version_option(package_name="mic-bench")
@click.pass_context
def cli(ctx, debug):
    """mic-bench: which encoder, fusion and objective wins on your catalogue, at what cost."""
    ctx.ensure_object(dict)["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("name", required=False)
@click.option("--options", "show_options", is_flag=True, help="also list every plugin's options")
@click.option("--json", "as_json", is_flag=True, help="print as JSON (always with each plugin's options)")
def plugins(name, show_options, as_json):
    """List every discovered plugin: kind, name, distribution, description.

    With NAME (a plugin name, of any kind), show that plugin's options: name, type, default,
    allowed values (choices, bounds) and description, read from its options model. --options
    shows them for every plugin. Plugins that failed to load are reported on stderr, and under
    `load_errors` in --json.
    """
    from bench.plugin_options import options_table
    from bench.plugins import get_registry

    registry = get_registry()
    specs = registry.find(name) if name is not None else registry.all()
    entries = [{"kind": s.kind, "name": s.name, "distribution": s.distribution, "version": s.version,
                "description": s.description, "options": s.describe_options()} for s in specs]
    if as_json:
        click.echo(json.dumps({"plugins": entries, "load_errors": registry.load_errors,
                               "left_out": registry.left_out}, indent=2, default=str))
        return
    if name is not None or show_options:
        for e in entries:
            click.echo(f"{e['kind']} {e['name']} ({e['distribution']} {e['version']}): {e['description']}")
            click.echo(options_table(e["options"]) + "\n")
        return
    from tabulate import tabulate

    click.echo(tabulate([[e["kind"], e["name"], f"{e['distribution']} {e['version']}", e["description"]] for e in entries],
                        headers=["kind", "name", "distribution", "description"]))
    click.echo("\n`bench plugins NAME` shows a plugin's options; `bench plugins --options` shows all.")


@cli.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--subset", type=click.IntRange(min=1), default=None, help="cap every split at N items")
@click.option("--only", multiple=True, metavar="AXIS=V1,V2", help="keep only trials with these axis values (repeatable)")
@click.option("--show-config", is_flag=True, help="also print each trial's resolved config (YAML), every default filled in, plugin options too")
def validate(suite_file, subset, only, show_config):
    """Check a suite without running it; print the expanded trial matrix."""
    import yaml

    from bench.plugin_options import with_option_defaults
    from bench.plugins import get_registry
    from bench.config.suite import load_suite, select_trials
    registry = get_registry()
    loaded = select_trials(load_suite(suite_file, registry, subset=subset), list(only))
    click.echo(f"{visible(loaded.suite.name)}: {len(loaded.trials)} trials")
    for t in loaded.trials:
        click.echo(f"  {t.key}  {visible(t.label())}")
        if show_config:
            text = yaml.safe_dump(with_option_defaults(t.config, registry), sort_keys=False)
            click.echo("    " + text.rstrip().replace("\n", "\n    "))


@cli.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True,
              help="results folder (one sub-folder per run)")
@click.option("--resume", is_flag=True, help="continue the latest run of this suite under --out")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="write into (or resume) this run folder")
@click.option("--rerun-stale", is_flag=True,
              help="on --resume: run again the finished trials recorded on data that has changed since")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="trials at once (default: as CPUs allow)")
@click.option("--address", default=None, help="join an existing Ray cluster (e.g. auto or ray://host:10001)")
@click.option("--tune-storage", default=None, metavar="PATH_OR_URI",
              help="where Ray Tune keeps its state and logs (a path, or a URI such as s3://bucket/prefix); "
                   "default: the run folder's tune/")
@click.option("--subset", type=click.IntRange(min=1), default=None, help="cap every split at N items (smoke/CI runs)")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="cache folder (default $MIC_BENCH_CACHE)")
@click.option("--only", multiple=True, metavar="AXIS=V1,V2", help="run only trials with these axis values (repeatable)")
@click.option("--tracker", "trackers", multiple=True, type=click.Choice(TRACKER_NAMES),
              help="also log trials to this tracker (repeatable; adds to the suite's trackers:)")
@click.option("--quiet", is_flag=True, help="plain lines (a trial starts, each epoch, a trial ends) instead of the live view")
def run(suite_file, out, resume, run_dir, rerun_stale, max_concurrent, address, tune_storage, subset, cache_dir, only,
        trackers, quiet):
    """Run a suite's trial matrix with Ray Tune and write rows and a leaderboard."""
    from bench.plugins import get_registry
    from bench.paths import cache_dir as make_cache_dir
    from bench.running.preflight import check_writable_folder
    from bench.running.runner import check_catalogues, preflight_ray, run_suite
    from bench.config.suite import load_suite, select_trials
    registry = get_registry()
    loaded = select_trials(load_suite(suite_file, registry, subset=subset), list(only))
    if run_dir is not None:
        check_writable_folder(run_dir, "--run-dir")
    else:
        check_writable_folder(out, "--out")
    cache = str(make_cache_dir(cache_dir).resolve()) if cache_dir else None  # created with its marker
    from bench.running.preflight import preflight

    # the driver reads every dataset once: errors exit 2 now, and workers check their data against it
    datasets = preflight(loaded, registry, cache_dir=cache)
    # a resumed run whose data changed since its rows were recorded: exit 2 before Ray starts
    check_catalogues(loaded, out=out, resume=resume, run_dir=run_dir, datasets=datasets, rerun_stale=rerun_stale)
    # an unreachable cluster, a trial it cannot hold, a node without the suite's plugins: exit 2 before any folder
    nodes = preflight_ray(loaded, address, registry)
    summary = run_suite(loaded, registry, out=out, resume=resume, run_dir=run_dir, max_concurrent=max_concurrent,
                        address=address, cache_dir=cache, quiet=quiet, trackers=trackers, datasets=datasets,
                        nodes=nodes, tune_storage=tune_storage, rerun_stale=rerun_stale)
    if (summary.run_dir / "leaderboard.md").exists():
        import shutil

        from bench.reporting.write import run_summary_table

        # on a terminal (or with $COLUMNS) the table fits its width; a log gets leaderboard.md whole
        width = shutil.get_terminal_size((0, 0)).columns if sys.stdout.isatty() or "COLUMNS" in os.environ else 0
        click.echo(run_summary_table(summary.run_dir, summary.rows, width))
    stopped = f", {summary.stopped} stopped by the scheduler" if summary.stopped else ""
    interrupted = (f", {summary.interrupted} interrupted (no row: `bench run --resume` runs them)"
                   if summary.interrupted else "")
    click.echo(f"run folder: {summary.run_dir}  ({summary.ok} ok, {summary.failed} failed{stopped}{interrupted}, "
               f"{summary.kept} kept from before)")
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]), default="md", show_default=True)
@click.option("--group-by", multiple=True, help="axis to group by (repeatable); default: the suite's")
@click.option("--sort", default=None, help="metric to rank by")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="write to this file instead of stdout")
def leaderboard(run_dir, fmt, group_by, sort, output):
    """Regenerate a leaderboard from stored rows (no training)."""
    from bench.reporting.write import leaderboard_for_run

    text = leaderboard_for_run(run_dir, fmt, list(group_by) or None, sort)
    if output:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise BenchError(f"cannot write the leaderboard: {exc.strerror}", file=output, field="--output",
                             fix="pass a file path inside an existing, writable folder") from None
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def plot(run_dir):
    """(Re)write RUN_DIR/plots/*.png and RUN_DIR/leaderboard.html from stored rows (no training)."""
    from bench.reporting.write import plots_for_run

    for path in plots_for_run(run_dir):
        click.echo(str(path))


@cli.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--group-by", multiple=True, help="axis to group by (repeatable); default: run B's leaderboard grouping")
@click.option("--metric", "metrics", multiple=True, help="metric to compare (repeatable); default: every one both have")
def compare(run_a, run_b, group_by, metrics):
    """Metric deltas per group between two runs (B - A), as markdown."""
    from bench.reporting.compare import compare_runs

    click.echo(compare_runs(run_a, run_b, list(group_by) or None, list(metrics) or None), nl=False)


@cli.group()
def cache():
    """Inspect or clear the cache of preprocessed inputs, frozen-encoder features and generated data."""


def _cache_root(cache_dir) -> Path:
    """--cache-dir, else $MIC_BENCH_CACHE, else ~/.cache/mic-bench; nothing is created."""
    import os

    from bench.paths import CACHE_ENV

    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mic-bench").expanduser()


@cache.command("info")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="default $MIC_BENCH_CACHE")
def cache_info(cache_dir):
    """Where the cache is, how many entries, how big (reads only)."""
    from bench.cache_folder import summarize

    root = _cache_root(cache_dir)
    info = summarize(root)
    if not info.exists:
        click.echo(f"cache folder: {root} (does not exist yet)")
        return
    unreadable = f"\nunreadable folders (not counted): {info.unreadable}" if info.unreadable else ""
    click.echo(f"cache folder: {root}\ntensor entries: {info.tensor_entries} ({info.tensor_bytes / 2**20:.1f} MiB)\n"
               f"everything: {info.total_bytes / 2**20:.1f} MiB{unreadable}")


@cache.command("clear")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="default $MIC_BENCH_CACHE")
@click.option("--yes", is_flag=True, help="do not ask")
def cache_clear(cache_dir, yes):
    """Delete every cache entry (they are recomputed when needed)."""
    from bench.cache_folder import clear
    from bench.paths import is_cache_root

    root = _cache_root(cache_dir)
    if not root.is_dir():
        click.echo(f"nothing to clear: {root} does not exist")
        return
    if not yes and is_cache_root(root):
        click.confirm(f"delete everything under {root}?", abort=True)
    clear(root)
    click.echo(f"cleared {root}")


from bench.reporting.data_inspect import data  # noqa: E402  (kept light: imports lazily inside)

cli.add_command(data)

from bench.reporting.baseline import baseline, check  # noqa: E402

cli.add_command(baseline)
cli.add_command(check)


def main():
    cli(obj={})


if __name__ == "__main__":
    main()
