"""False-alarm rate and power of `bench check` on the shipped CI suite, measured by re-running it.

False alarms: the CI suite re-run with seeds the baseline never saw (draw j: seeds 1000 + 4j ...),
each draw checked against the committed baseline: a healthy change that only moves the random
streams looks exactly like this, so every failure is a false alarm. Power: the same draws with one
group deliberately broken (its epochs cut to 1, its learning rate / 100, its text encoder frozen at
random init), which must fail naming that group.

Every draw is an in-process `run_suite` on one Ray session, into its own run folder under
``--work``; a folder that already holds all its trials is read, not run again, so an interrupted
measurement resumes where it stopped and a changed rule is re-evaluated without training
(``--evaluate-only``). The table is written as markdown (for docs/ci.md) and JSON.

    python benchmarks/ci_gate_power.py --runner processes --baseline-seeds 256 --first-seed 9000 --draws 100
                                                                    # ~1 h on 2 busy cores
    python benchmarks/ci_gate_power.py --evaluate-only --markdown table.md
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "ci" / "fusion_small.yaml"
BASELINE = ROOT / "suites" / "ci" / "baselines" / "fusion_small.json"
ATTEMPTS = 4
FIRST_DRAW_SEED = 1000  # far from the baseline's seeds (0 ... 15)


def log(message: str) -> None:
    print(f"[ci_gate_power {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- the suite variants ---------------------------------------------------------------------

def break_group(trial: dict, regression: str) -> dict:
    """The trial section with one deliberate regression applied."""
    trial = copy.deepcopy(trial)
    if regression == "epochs_1":
        for stage in trial["stages"]:
            stage["epochs"] = 1
    elif regression == "lr_div_100":
        for stage in trial["stages"]:
            stage["optimizer"]["lr"] = stage["optimizer"]["lr"] / 100
    elif regression == "text_frozen_random":
        trial["encoders"]["text"].setdefault("options", {})["freeze"] = "all"
    else:
        raise ValueError(regression)
    return trial


REGRESSIONS = ("epochs_1", "lr_div_100", "text_frozen_random")


def variant(raw: dict, seeds: list[int], group: dict | None = None, regression: str | None = None) -> dict:
    """The CI suite with other seeds; with ``group``: only that group's trials, broken by ``regression``."""
    out = copy.deepcopy(raw)
    out["matrix"]["seed"] = list(seeds)
    if group is not None:
        for axis, value in group.items():
            values = out["matrix"][axis]
            out["matrix"][axis] = {value: values[value]} if isinstance(values, dict) else [value]
        out["trial"] = break_group(out["trial"], regression)
    return out


def draw_seeds(draw: int, per_draw: int, first: int = FIRST_DRAW_SEED) -> list[int]:
    return [first + per_draw * draw + i for i in range(per_draw)]


# ---- running (cached per run folder) --------------------------------------------------------

def run_variant(name: str, raw: dict, work: Path, registry, max_concurrent: int, trial_cpu: float | None = None,
                pool=None):
    """Rows and predictions of one variant, run once into work/runs/<name> (resumed if cut short):
    by `run_suite` on the running Ray session, or with ``pool`` in a process pool."""
    import polars as pl

    from bench.config.suite import load_suite
    from bench.reporting.write import load_predictions
    from bench.running.runner import run_suite

    suites = work / "suites"
    suites.mkdir(parents=True, exist_ok=True)
    suite_file = suites / f"{name}.yaml"
    if trial_cpu is not None:  # Ray's bookkeeping only: a trial runs max(1, int(cpu)) threads either way
        raw = {**raw, "resources": {**raw.get("resources", {}), "cpu": trial_cpu}}
    suite_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    loaded = load_suite(suite_file, registry)
    run_dir = work / "runs" / name
    trials = run_dir / "trials.parquet"
    if trials.is_file():
        rows = pl.read_parquet(trials)
        done = set(rows.filter(pl.col("status") == "ok")["trial_key"].to_list())
        if {t.key for t in loaded.trials} <= done:
            return rows.filter(pl.col("trial_key").is_in([t.key for t in loaded.trials])), load_predictions(run_dir), 0.0
    start, load_before = time.perf_counter(), load_now()
    if pool is not None:
        rows = run_in_pool(loaded, run_dir, pool)
        took = time.perf_counter() - start
        _timing(run_dir, took, rows.height, load_before)
        return rows, load_predictions(run_dir), took
    for attempt in range(1, ATTEMPTS + 1):  # a shared machine's memory pressure can get Ray to kill a worker
        try:
            summary = run_suite(loaded, registry, run_dir=run_dir, max_concurrent=max_concurrent, quiet=True)
        except Exception as exc:
            log(f"{name}: attempt {attempt} ended by {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        else:
            if not summary.failed:
                break
            log(f"{name}: attempt {attempt}: {summary.failed} trials failed; they run again")
        if attempt == ATTEMPTS:
            raise SystemExit(f"{name}: trials still failing after {ATTEMPTS} attempts (run folder {run_dir})")
        time.sleep(30)
    took = time.perf_counter() - start
    _timing(run_dir, took, summary.ok, load_before)
    return summary.rows, load_predictions(run_dir), took


def _timing(run_dir: Path, took: float, trials: int, load_before: list[float]) -> None:
    (run_dir / "gate_timing.json").write_text(json.dumps({
        "seconds": round(took, 1), "trials": trials, "load_before": load_before, "load_after": load_now(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}), encoding="utf-8")


# Ray starts its workers at a higher niceness than the driver (19 under `nice -n 10`), which on a
# shared machine starves them; the same trial function in a pool of plain processes inherits the
# driver's niceness. A trial's numbers do not depend on which runs it (docs/ci.md, Determinism).
_CONTEXT = None


def _pool_init(cache_dir: str | None) -> None:
    global _CONTEXT
    from bench.api.plugins import get_registry
    from bench.trial.context import TrialContext

    _CONTEXT = TrialContext(registry=get_registry(), cpus=1, cache_dir=cache_dir)


def _pool_trial(spec):
    from bench.trial.run import run_trial

    outcome = run_trial(spec, _CONTEXT)
    return outcome.row, outcome.predictions, outcome.curve


def run_in_pool(loaded, run_dir: Path, pool):
    """The variant's trials (those its folder does not hold yet) in the process pool, stored as `bench run` would."""
    from bench.reporting.results import RunDir

    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    done = run.finished_keys(only_done=True)
    pending = [t for t in loaded.trials if t.key not in done]
    for row, predictions, curve in pool.map(_pool_trial, pending):
        if row["status"] != "ok":
            raise SystemExit(f"{run_dir.name}: trial {row['trial_key']} failed: {row.get('error', '')[:300]}")
        run.write_row(row, predictions, curve)
    return run.consolidate()


def plan(raw: dict, args) -> list[tuple[str, dict, dict]]:
    """(name, suite variant, what it is) in the order they run: the baseline's seeds, the first
    draw and every deliberate regression of the first group on its seeds, the other draws, the
    other groups' regressions, then regressions on further draws; a measurement cut short has
    some of each."""
    per_draw = len(raw["matrix"]["seed"])
    out = [("baseline", variant(raw, list(range(args.baseline_seeds))), {"kind": "baseline"})]
    groups = _groups(raw)

    def null(draw: int):
        seeds = draw_seeds(draw, per_draw, args.first_seed)
        return f"draw{draw:02d}", variant(raw, seeds), {"kind": "null", "draw": draw, "seeds": seeds}

    def broken(draw: int, groups=groups):
        seeds = draw_seeds(draw, per_draw, args.first_seed)
        for regression in REGRESSIONS:
            for group in groups:
                label = "-".join(str(v) for v in group.values())
                yield (f"draw{draw:02d}-{label}-{regression}", variant(raw, seeds, group, regression),
                       {"kind": "regression", "draw": draw, "seeds": seeds, "group": group, "regression": regression})

    out.append(null(0))
    out += list(broken(0, groups[:1])) if args.regression_draws > 0 else []  # the cheapest group first
    out += [null(draw) for draw in range(1, args.draws)]
    out += list(broken(0, groups[1:])) if args.regression_draws > 0 else []
    for draw in range(1, args.regression_draws):
        out += list(broken(draw))
    return out


def _groups(raw: dict) -> list[dict]:
    """Every group of the suite: one value of each matrix axis but the seed."""
    import itertools

    axes = [a for a in raw["matrix"] if a != "seed"]
    values = [list(raw["matrix"][a]) for a in axes]
    return [dict(zip(axes, combo)) for combo in itertools.product(*values)]


# ---- evaluation -----------------------------------------------------------------------------

def machine() -> dict:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "load_now": load_now()}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy import stats

    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def evaluate(raw: dict, work: Path, registry, args) -> dict:
    """Every finished draw checked against the baseline with `bench check`'s own comparison."""
    import polars as pl

    from bench.reporting.baseline import item_table, read_baseline, read_items
    from bench.reporting.check import compare, failure_lines

    base = read_baseline(args.baseline)
    items = read_items(args.baseline, base)
    null, broken, timings = [], [], []
    draws: dict[int, tuple] = {}
    for name, suite, what in plan(raw, args):
        run_dir = work / "runs" / name
        if not (run_dir / "trials.parquet").is_file():
            continue
        from bench.reporting.write import load_predictions

        rows = pl.read_parquet(run_dir / "trials.parquet")
        if (run_dir / "gate_timing.json").is_file():
            timings.append({"run": name, **json.loads((run_dir / "gate_timing.json").read_text())})
        if what["kind"] == "baseline":
            continue
        preds = load_predictions(run_dir)
        if what["kind"] == "null":
            if rows.filter(pl.col("status") == "ok").height < len(_groups(raw)) * len(what["seeds"]):
                continue  # cut short
            draws[what["draw"]] = (rows, preds)
            report = compare(base, rows, items=items, run_items=item_table(rows, preds, base.group_by))
            null.append({"draw": what["draw"], "seeds": what["seeds"], "ok": report.ok,
                         "regressions": failure_lines(report),
                         "values": {f"{f.group} {f.metric}": {"run": f.current, "change": f.change,
                                                              "allowed": f.allowed}
                                    for f in report.passed + report.improvements + report.regressions
                                    if f.baseline is not None}})
            continue
        if what["draw"] not in draws:
            continue
        other_rows, other_preds = draws[what["draw"]]
        key = " ".join(f"{k}={v}" for k, v in what["group"].items())
        keep = pl.lit(True)
        for axis, value in what["group"].items():
            keep = keep & (pl.col(axis) == value)
        mixed = pl.concat([other_rows.filter(~keep), rows], how="diagonal_relaxed")
        mixed_preds = pl.concat([other_preds.filter(pl.col("trial_key").is_in(mixed["trial_key"].to_list())),
                                 preds], how="diagonal_relaxed")
        report = compare(base, mixed, items=items, run_items=item_table(mixed, mixed_preds, base.group_by))
        named = [f for f in report.regressions if f.group == key]
        changes = {m: rows[m].mean() - base.groups[key].metrics[m].mean
                   for m in ("accuracy", "macro_f1") if m in base.groups[key].metrics}
        broken.append({"draw": what["draw"], "group": key, "regression": what["regression"],
                       "detected": bool(named), "metrics_failed": sorted(f.metric for f in named),
                       "change": changes, "messages": failure_lines(report)})
    return {"baseline": str(args.baseline), "rule": base.rule.model_dump(), "tests": base.tests,
            "null": null, "regressions": broken, "timings": timings,
            "calibration": calibration(base, null)}


def calibration(base, null: list[dict]) -> dict:
    """Per (group, metric): the spread of the run means over the draws against the one the rule assumes."""
    import numpy as np

    out = {}
    for key, group in base.groups.items():
        for metric, stats in group.metrics.items():
            runs = [d["values"][f"{key} {metric}"]["run"] for d in null if f"{key} {metric}" in d["values"]]
            if len(runs) < 2:
                continue
            sigma = max(stats.std, stats.flip_std or 0.0)
            out[f"{key} {metric}"] = {"draws": len(runs), "mean_of_draws": float(np.mean(runs)),
                                      "baseline_mean": stats.mean,
                                      "sd_of_draw_means": float(np.std(runs, ddof=1)),
                                      "assumed_sd_of_a_draw_mean": sigma / np.sqrt(base.rule.run_seeds),
                                      "allowed": stats.allowed, "detectable": stats.detectable}
    return out


def markdown(result: dict) -> str:
    null, broken = result["null"], result["regressions"]
    alarms = sum(not d["ok"] for d in null)
    lines = [f"Measured {result['evaluated']} with `{result['command']}` on {result['machine']['cpus']} CPUs "
             f"({result['machine']['processor']}); against `{result['baseline']}` "
             f"(alpha {result['rule']['alpha']} over {result['tests']} group-metric tests, "
             f"{result['rule']['run_seeds']} seeds per group per check).", ""]
    if result["timings"]:
        seconds = [t["seconds"] for t in result["timings"] if not t["run"].startswith("baseline") and "-" not in t["run"]]
        loads = [t["load_before"][0] for t in result["timings"]] + [t["load_after"][0] for t in result["timings"]]
        if seconds:
            lines += [f"One check run of the suite (8 trials, 2 at a time, on workers already started) took "
                      f"{min(seconds):.0f}-{max(seconds):.0f} s (median {sorted(seconds)[len(seconds) // 2]:.0f} s); "
                      f"1-minute load during the runs {min(loads):.1f}-{max(loads):.1f}.", ""]
    if null:
        low, high = clopper_pearson(alarms, len(null))
        lines += ["| re-draws of the seeds (nothing broken) | false alarms | 95% interval |", "|---|---|---|",
                  f"| {len(null)} | {alarms} ({alarms / len(null):.1%}) | {low:.1%} - {high:.1%} |", ""]
        for d in null:
            if not d["ok"]:
                lines += [f"- false alarm, draw {d['draw']} (seeds {d['seeds']}): " + "; ".join(d["regressions"])]
        lines.append("")
    if broken:
        lines += ["| group | deliberate regression | accuracy change | macro-F1 change | detected | metrics failed |",
                  "|---|---|---|---|---|---|"]
        combos = sorted({(b["group"], b["regression"]) for b in broken})
        for group, regression in combos:
            runs = [b for b in broken if b["group"] == group and b["regression"] == regression]
            acc = [b["change"].get("accuracy") for b in runs if b["change"].get("accuracy") is not None]
            f1 = [b["change"].get("macro_f1") for b in runs if b["change"].get("macro_f1") is not None]
            failed = sorted({m for b in runs for m in b["metrics_failed"]})
            lines.append(f"| {group} | {regression} | {_span(acc)} | {_span(f1)} | "
                         f"{sum(b['detected'] for b in runs)} / {len(runs)} | {', '.join(failed) or '-'} |")
        lines.append("")
    if result["calibration"]:
        lines += ["| group metric | baseline mean | mean of the draws | sd of a draw's mean: measured | assumed | "
                  "allowed drop | detectable drop (80%) |", "|---|---|---|---|---|---|---|"]
        for key, c in result["calibration"].items():
            lines.append(f"| {key} | {c['baseline_mean']:.4f} | {c['mean_of_draws']:.4f} | "
                         f"{c['sd_of_draw_means']:.4f} ({c['draws']} draws) | {c['assumed_sd_of_a_draw_mean']:.4f} | "
                         f"{c['allowed']:.4f} | {c['detectable']:.4f} |")
    return "\n".join(lines) + "\n"


def _span(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):+.3f} ({min(values):+.3f} to {max(values):+.3f})"


# ---- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mic-bench-ci-gate",
                   help="run folders of every draw (kept: a second call reuses them)")
    p.add_argument("--draws", type=int, default=24, help="re-draws of the suite's seeds (false alarms)")
    p.add_argument("--regression-draws", type=int, default=3, help="draws per group and deliberate regression")
    p.add_argument("--first-seed", type=int, default=FIRST_DRAW_SEED,
                   help="first seed of the draws (draw j: first + 4j ...); new seeds give draws no choice was made on")
    p.add_argument("--baseline-seeds", type=int, default=16, help="seeds of the baseline run (0 ... N-1)")
    p.add_argument("--baseline", type=Path, default=BASELINE, help="the baseline to check against")
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--trial-cpu", type=float, default=None,
                   help="Ray's CPU count per trial (0.5: four one-thread trials at a time on 2 cores, for a larger "
                        "share of a busy machine; the numbers do not change, a trial runs max(1, int(cpu)) threads)")
    p.add_argument("--runner", choices=("ray", "processes"), default="ray",
                   help="run_suite on one Ray session, or the same trial function in a pool of plain processes "
                        "(which keep the driver's niceness; Ray's workers run at a lower priority)")
    p.add_argument("--runs-only", action="store_true", help="run (or resume) the draws, evaluate nothing")
    p.add_argument("--evaluate-only", action="store_true", help="use the run folders there are, run nothing")
    p.add_argument("--output", type=Path, default=None, help="JSON of every draw's verdict")
    p.add_argument("--markdown", type=Path, default=None, help="the summary table as markdown")
    args = p.parse_args(argv)

    from bench.api.plugins import get_registry

    registry = get_registry()
    raw = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    work = args.work.resolve()
    started = datetime.now(timezone.utc)
    if not args.evaluate_only:
        pool = None
        if args.runner == "ray":
            from bench.running.runner import _init_ray

            _init_ray(None)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(args.max_concurrent, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_pool_init, initargs=(os.environ.get("MIC_BENCH_CACHE"),))
        for name, suite, what in plan(raw, args):
            rows, preds, took = run_variant(name, suite, work, registry, args.max_concurrent, args.trial_cpu, pool)
            if took:
                log(f"{name}: {rows.height} trials in {took:.0f} s (load {load_now()})")
        if pool is not None:
            pool.shutdown()
        else:
            import ray

            ray.shutdown()
    if args.runs_only:
        return 0
    result = evaluate(raw, work, registry, args)
    result.update(command="python benchmarks/ci_gate_power.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  evaluated=started.isoformat(timespec="seconds"), machine=machine())
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    text = markdown(result)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
