"""What per-epoch dev evaluation (model selection) costs, as a share of each trial's wall time.

    python benchmarks/selection_cost.py                       # runs suites/mic_fusion.yaml in a temp folder
    python benchmarks/selection_cost.py --run-dir results/mic_fusion/RUN   # reads a finished run instead

Every row records ``selection_s`` (dev predictions, dev metrics and copying the best weights,
summed over the trial's evaluations) and ``wall_s``; both are measured inside the same trial, so
the ratio needs no second run. Prints JSON: per fusion and overall, goal <= 0.10.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.10


def run_suite(suite: Path, out: Path) -> Path:
    env = dict(os.environ, MIC_BENCH_CACHE=str(out / "cache"))
    subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(out), "--quiet"],
                   check=False, env=env)
    return next(p for p in (out / suite.stem).iterdir() if (p / "trials.parquet").exists())


def selection_share(rows: pl.DataFrame, group_by: str) -> dict:
    ok = rows.filter(pl.col("status") == "ok")
    per_group = (ok.group_by(group_by).agg(pl.col("selection_s").sum(), pl.col("wall_s").sum(),
                                           pl.col("n_evaluations").mean())
                 .with_columns((pl.col("selection_s") / pl.col("wall_s")).alias("share")).sort(group_by))
    total = float(ok["selection_s"].sum() / ok["wall_s"].sum())
    return {"share_of_wall_time": round(total, 4), "goal": f"<= {GOAL}", "met": total <= GOAL,
            "trials": ok.height,
            "per_group": {str(r[group_by]): {"share": round(r["share"], 4), "selection_s": round(r["selection_s"], 2),
                                             "wall_s": round(r["wall_s"], 2), "evaluations": r["n_evaluations"]}
                          for r in per_group.iter_rows(named=True)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "mic_fusion.yaml")
    parser.add_argument("--run-dir", type=Path, help="a finished run folder to read instead of running the suite")
    parser.add_argument("--group-by", default="fusion")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    if args.run_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            rows = pl.read_parquet(run_suite(args.suite, Path(tmp)) / "trials.parquet")
    else:
        rows = pl.read_parquet(args.run_dir / "trials.parquet")
    result = {"selection_cost": selection_share(rows, args.group_by),
              "load_1min": {"start": load_start, "end": os.getloadavg()[0]}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
