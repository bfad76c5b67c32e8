"""How often the leaderboard's "significantly worse" mark is wrong, and how often it finds a real gap.

Simulated leaderboards scored by the project's own significance code (bench/reporting/significance.py,
``mark_groups``: the permutation test when every row has one seed, the bootstrap of items and seeds
otherwise, and the same all-pairs step-down that marks rows):

- ``equal``: 10 equally good models (accuracy 0.70 on 500 test items, independent errors, one
  seed each): the share of leaderboards that mark any row significantly worse must be <= 5%.
- ``equal_seeds``: the same with 3 seeds per model and training noise (each seed's own accuracy
  drawn around 0.70 with sd 0.02): seeds and items resampled together.
- ``equal_seeds_2``: as ``equal_seeds`` with 2 seeds per model.
- ``gap``: two models of true accuracy 0.70 and 0.80 on 500 items (independent errors): the share
  of leaderboards that mark the worse one must be >= 80%.
- ``gap_seeds``: the same gap with 3 seeds per model and seed sd 0.02.

    python benchmarks/significance_calibration.py            # 1,000 leaderboards per scenario
    python benchmarks/significance_calibration.py --quick    # a smoke run (the test's)
    python benchmarks/significance_calibration.py --scenario equal --seed 0 --seed 1 --seed 2
                                                             # 3 draws of 1,000 pooled: 3,000 leaderboards

``--seeds-averaged-per-item``: rows with seeds are marked by the permutation test on each item's
mean over the row's seeds (group labels shuffled within each item), the alternative the
leaderboard does not use; it shows why (a seed's training noise moves all its items together).

Prints a markdown table (share, its Monte Carlo standard error, seconds; draws pooled) and writes it as JSON
with ``--json PATH``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reporting.significance import ALPHA, N_RESAMPLES, EncodedPredictions, mark_groups  # noqa: E402

PER_ITEM = "permutation of per-item seed means"

N_LABELS = 8


@dataclass(frozen=True)
class Scenario:
    name: str
    accuracies: tuple[float, ...]  # true accuracy of each model
    n_items: int = 500
    seeds: int = 1
    seed_sd: float = 0.0  # sd of a seed's own accuracy around its model's
    expect: str = ""

    def leaderboard(self, rng: np.random.Generator) -> list[list[EncodedPredictions]]:
        """Each model's seeds as encoded test predictions: right with the seed's accuracy, else another label."""
        true = rng.integers(0, N_LABELS, self.n_items)
        groups = []
        for acc in self.accuracies:
            trials = []
            for _ in range(self.seeds):
                p = float(np.clip(acc + rng.normal(0, self.seed_sd), 0, 1)) if self.seed_sd else acc
                wrong = (true + rng.integers(1, N_LABELS, self.n_items)) % N_LABELS
                pred = np.where(rng.random(self.n_items) < p, true, wrong)
                trials.append(EncodedPredictions(true, pred, None, N_LABELS))
            groups.append(trials)
        return groups


SCENARIOS = (
    Scenario("equal", (0.70,) * 10, expect="<= 5% of leaderboards mark any row"),
    Scenario("equal_seeds", (0.70,) * 10, seeds=3, seed_sd=0.02, expect="<= 5% of leaderboards mark any row"),
    Scenario("equal_seeds_2", (0.70,) * 10, seeds=2, seed_sd=0.02, expect="<= 5% of leaderboards mark any row"),
    Scenario("gap", (0.80, 0.70), expect=">= 80% of leaderboards mark the worse model"),
    Scenario("gap_seeds", (0.80, 0.70), seeds=3, seed_sd=0.02, expect="power with seeds (no target)"),
)


def seeds_averaged_per_item(groups: list[list[EncodedPredictions]]) -> list[list[EncodedPredictions]]:
    """Each row as one pseudo-trial whose per-item accuracy is the mean over its seeds."""
    return [[EncodedPredictions(None, None, None, 0, {"accuracy": np.mean([t.true == t.pred for t in g], axis=0)})]
            for g in groups]


def run(scenario: Scenario, n_leaderboards: int, n_resamples: int, seeds: list[int],
        averaged: bool = False) -> dict:
    """Share of leaderboards where the outcome happened: any row marked (equal models) or the worse
    model marked (a gap), with its Monte Carlo standard error; ``n_leaderboards`` per seed, pooled."""
    hits, methods = 0, set()
    start = time.perf_counter()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for b in range(n_leaderboards):
            groups = scenario.leaderboard(rng)
            if averaged and scenario.seeds > 1:
                _, marks, _ = mark_groups(seeds_averaged_per_item(groups), "accuracy", n_resamples, seed=b, alpha=ALPHA)
                method = PER_ITEM
            else:
                _, marks, method = mark_groups(groups, "accuracy", n_resamples, seed=b, alpha=ALPHA)
            methods.add(method)
            if scenario.name.startswith("gap"):
                worse = int(np.argmin(scenario.accuracies))
                hits += marks[worse] == ""
            else:
                hits += "" in marks
    total = n_leaderboards * len(seeds)
    share = hits / total
    return {"scenario": scenario.name, "models": len(scenario.accuracies), "seeds": scenario.seeds,
            "seed_sd": scenario.seed_sd, "items": scenario.n_items, "draws": seeds, "leaderboards": total,
            "method": "/".join(sorted(methods)), "resamples": n_resamples, "hits": hits, "share": share,
            "mc_se": float(np.sqrt(share * (1 - share) / total)), "expect": scenario.expect,
            "seconds": round(time.perf_counter() - start, 1)}


def table(results: list[dict]) -> str:
    lines = ["| scenario | models x seeds (seed sd) | marks by | draws | leaderboards | share | ± MC s.e. | target | s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['models']} x {r['seeds']} ({r['seed_sd']}) | {r['method']} | "
                     f"{', '.join(map(str, r['draws']))} | {r['leaderboards']} | {r['share']:.3f} | {r['mc_se']:.3f} | "
                     f"{r['expect']} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaderboards", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=N_RESAMPLES, help="shuffles or bootstrap resamples")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--quick", action="store_true", help="100 leaderboards of 300 resamples: a smoke run")
    parser.add_argument("--seed", type=int, action="append",
                        help="a draw of simulated leaderboards (repeat to pool draws; default 0)")
    parser.add_argument("--seeds-averaged-per-item", action="store_true",
                        help="mark rows with seeds by shuffling per-item seed means (not the leaderboard's method)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n, resamples = (100, 300) if args.quick else (args.leaderboards, args.resamples)
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    results = [run(s, n, resamples, args.seed or [0], args.seeds_averaged_per_item) for s in chosen]
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
