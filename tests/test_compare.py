"""`bench compare`: per-group metric deltas (B - A) between two stored runs."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bench.reporting.compare import compare_runs, compare_tables
from bench.errors import BenchError
from bench.reporting.results import load_run
from conftest import run_bench
from report_runs import N_LABELS, noisy_predictions, suite_copy, trial, write_run


def _run(path, accuracies: dict[str, float], seed: int):
    true = np.random.default_rng(0).integers(0, N_LABELS, 150)
    trials = [trial(f"{g}{s}", {"fusion": g}, s, true, noisy_predictions(true, acc, seed + 10 * i + s))
              for i, (g, acc) in enumerate(accuracies.items()) for s in (0, 1)]
    return write_run(path, trials, suite_copy("cmp", {"fusion": list(accuracies), "seed": [0, 1]}))


@pytest.fixture
def runs(tmp_path):
    a = _run(tmp_path / "a", {"late": 0.5, "text_only": 0.6, "gated": 0.55}, seed=0)
    b = _run(tmp_path / "b", {"late": 0.8, "text_only": 0.6, "film": 0.7}, seed=100)
    return a, b


def test_deltas_are_b_minus_a_per_group_and_one_sided_groups_are_kept(runs):
    (_, rows_a), (_, rows_b) = load_run(runs[0]), load_run(runs[1])
    table = compare_tables(rows_a, rows_b, ["fusion"], ["accuracy", "macro_f1"])
    by_group = {r["fusion"]: r for r in table.iter_rows(named=True)}
    assert set(by_group) == {"late", "text_only", "gated", "film"}
    mean = lambda rows, g, m: rows.filter(pl.col("fusion") == g)[m].mean()  # noqa: E731
    for m in ("accuracy", "macro_f1"):
        for g in ("late", "text_only"):
            assert by_group[g][f"{m}_delta"] == pytest.approx(mean(rows_b, g, m) - mean(rows_a, g, m))
    assert by_group["late"]["accuracy_delta"] > 0.15  # 0.5 -> 0.8
    assert by_group["gated"]["accuracy_b"] is None and by_group["gated"]["accuracy_delta"] is None
    assert by_group["film"]["accuracy_a"] is None and by_group["film"]["n_b"] == 2


def test_markdown_table_and_cli(runs):
    text = compare_runs(*runs, metrics=["accuracy"])
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["fusion", "accuracy A", "accuracy B", "Δ accuracy", "n A", "n B"]
    late = next([c.strip() for c in line.strip("|").split("|")] for line in lines[1:] if "| late" in line)
    assert float(late[3]) == pytest.approx(float(late[2]) - float(late[1]), abs=0.0015) and late[3].startswith("+")
    film = next([c.strip() for c in line.strip("|").split("|")] for line in lines[1:] if "| film" in line)
    assert film[1] == "-" and film[3] == "-"

    proc = run_bench("compare", *runs, "--group-by", "fusion", "--metric", "accuracy", "--metric", "macro_f1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Δ accuracy" in proc.stdout and "Δ macro_f1" in proc.stdout and "B - A" in proc.stdout


def test_unknown_axis_or_metric_is_a_clear_error(runs):
    with pytest.raises(BenchError) as exc:
        compare_runs(*runs, group_by=["encoder"])
    assert exc.value.field == "--group-by" and "no column 'encoder'" in exc.value.message and "fusion" in exc.value.fix
    with pytest.raises(BenchError) as exc:
        compare_runs(*runs, metrics=["ndcg@10"])
    assert exc.value.field == "--metric" and "accuracy" in exc.value.fix
