"""Same config, same seed, same numbers on CPU: a trial run twice gives identical metrics,
predictions and learning curves, in-process and through `bench run` (Ray, cache warm the second time)."""
from __future__ import annotations

import math

import polars as pl
import pytest

from bench.config.matrix import trial_key

from bench.config.schema import TrialConfig, TrialSpec
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import run_bench, tiny_trial


def measures_the_machine(key: str) -> bool:
    """Row values that time, size or place the run (seconds, throughput, memory, cache use, node)."""
    return key.endswith("_s") or key.startswith(("cache_", "node_")) or "mem_mb" in key or key in {
        "hostname", "started", "finished"}


def results(row: dict) -> dict:
    """Every numeric or text value of a row that the model decides."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float, str)) and not measures_the_machine(k)}


def same(a: dict, b: dict) -> list[str]:
    """Keys whose values differ (nan equals nan)."""
    return sorted(k for k in set(a) | set(b)
                  if not (a.get(k) == b.get(k) or (isinstance(a.get(k), float) and isinstance(b.get(k), float)
                                                   and math.isnan(a[k]) and math.isnan(b[k]))))


def test_same_config_same_seed_same_metrics_in_process(registry):
    trial = tiny_trial(fusion={"name": "shallow", "options": {"hidden": 16}}, seed=3, cache=False,
                       stages=[{"objectives": ["cross_entropy"], "epochs": 2, "batch_size": 16,
                                "optimizer": {"lr": 1e-3}}])
    config = TrialConfig.model_validate(trial).model_dump(mode="json")
    spec = TrialSpec(trial_key(config), {}, {}, config)
    first, second = (run_trial(spec, TrialContext(registry=registry)) for _ in range(2))
    assert first.row["status"] == "ok", first.row["error"]
    assert {"accuracy", "macro_f1", "loss_train", "dev_macro_f1"} <= set(results(first.row))
    assert same(results(first.row), results(second.row)) == []
    assert first.predictions.equals(second.predictions)
    curves = [o.curve.drop([c for c in o.curve.columns if measures_the_machine(c)]) for o in (first, second)]
    assert curves[0].height > 0 and curves[0].equals(curves[1])


@pytest.mark.heavy
def test_same_suite_run_twice_gives_the_same_rows(write_suite, tmp_path):
    suite = write_suite({"name": "twice", "trial": tiny_trial(seed=1), "matrix": {"fusion": ["text_only", "late"]}})
    rows = []
    for out in ("a", "b"):
        proc = run_bench("run", suite, "--out", tmp_path / out, "--quiet")
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows.append(pl.read_parquet(next((tmp_path / out / "twice").glob("*/trials.parquet"))).sort("trial_key"))
    first, second = ([results(r) for r in frame.to_dicts()] for frame in rows)
    assert [r["trial_key"] for r in first] == [r["trial_key"] for r in second] and len(first) == 2
    for a, b in zip(first, second):
        assert a["status"] == "ok" and "macro_f1" in a
        assert same(a, b) == [], a["trial_key"]
