"""`bench baseline` / `bench check`: the comparison on hand-made numbers, and the CI suite for real."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from bench.reporting.check import (Baseline, MetricStats, build_baseline, compare, dump_baseline, parse_tolerances,
                         read_baseline, render_report)
from bench.errors import BenchError
from conftest import invoke_bench

ROOT = Path(__file__).resolve().parents[1]
CI_SUITE = ROOT / "suites" / "ci" / "fusion_small.yaml"
CI_BASELINE = ROOT / "suites" / "ci" / "baselines" / "fusion_small.json"


def rows(*trials) -> pl.DataFrame:
    """(fusion, seed, accuracy, macro_f1[, status, error]) tuples -> stored-row shape."""
    out = []
    for t in trials:
        fusion, seed, acc, f1, *rest = t
        status, error = (rest + ["ok", ""])[:2] if rest else ("ok", "")
        out.append({"trial_key": f"{fusion}-{seed}", "fusion": fusion, "seed": seed, "status": status,
                    "error": error, "accuracy": acc, "macro_f1": f1, "v_torch": "2.0", "python": "3.11"})
    return pl.DataFrame(out)


BASE_ROWS = rows(("a", 0, 0.80, 0.60), ("a", 1, 0.80, 0.62), ("b", 0, 0.50, 0.40), ("b", 1, 0.54, 0.40))


def baseline(**kw) -> Baseline:
    return build_baseline(BASE_ROWS, suite="s", suite_hash="h", group_by=["fusion"], subset=None, **kw)


def test_baseline_holds_mean_std_n_per_group_and_metric_with_default_tolerances():
    b = baseline()
    assert set(b.groups) == {"fusion=a", "fusion=b"} and b.group_by == ["fusion"]
    assert b.groups["fusion=a"].metrics["accuracy"] == MetricStats(mean=0.8, std=0.0, n=2)
    b_acc = b.groups["fusion=b"].metrics["accuracy"]
    assert b_acc.mean == 0.52 and b_acc.std == pytest.approx(0.028284, abs=1e-6) and b_acc.n == 2
    assert b.groups["fusion=a"].seeds == 2
    assert {m: (t.abs_floor, t.k, t.higher_is_better) for m, t in b.tolerance.items()} == {
        "accuracy": (0.02, 3.0, True), "macro_f1": (0.02, 3.0, True)}
    assert b.versions == {"torch": "2.0", "python": "3.11"}


def test_baseline_json_is_sorted_indented_rounded_and_round_trips(tmp_path):
    b = build_baseline(rows(("a", 0, 1 / 3, 0.5), ("a", 1, 2 / 3, 0.5)), suite="s", suite_hash="h",
                       group_by=["fusion"], subset=40, abs_floors={"accuracy": 0.05}, k=2)
    text = dump_baseline(b)
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    acc = json.loads(text)["groups"]["fusion=a"]["metrics"]["accuracy"]
    assert acc == {"mean": 0.5, "n": 2, "std": 0.235702}
    assert json.loads(text)["tolerance"]["accuracy"] == {"abs_floor": 0.05, "higher_is_better": True, "k": 2.0}
    path = tmp_path / "b.json"
    path.write_text(text)
    assert read_baseline(path) == b and dump_baseline(read_baseline(path)) == text


def test_drop_within_the_floor_passes_and_beyond_floor_plus_k_std_fails():
    b = baseline()  # a: accuracy 0.80 ± 0 -> allowed 0.02; b: 0.52 ± 0.0283 -> allowed 0.02 + 3 x 0.0283 = 0.1049
    within = compare(b, rows(("a", 0, 0.79, 0.61), ("a", 1, 0.79, 0.61), ("b", 0, 0.42, 0.40), ("b", 1, 0.42, 0.40)))
    assert within.ok and not within.improvements and within.checked == 4
    beyond = compare(b, rows(("a", 0, 0.77, 0.61), ("a", 1, 0.77, 0.61), ("b", 0, 0.41, 0.40), ("b", 1, 0.41, 0.40)))
    assert not beyond.ok
    assert [(f.group, f.metric) for f in beyond.regressions] == [("fusion=a", "accuracy"), ("fusion=b", "accuracy")]
    first = beyond.regressions[0]
    assert first.allowed == 0.02 and first.change == pytest.approx(-0.03)
    table = render_report(beyond)
    assert "## Regressions (2)" in table and "fusion=a" in table and "accuracy" in table and "FAILED" in table


def test_cli_tolerance_and_k_override_the_recorded_ones():
    b = baseline()
    worse = rows(("a", 0, 0.77, 0.61), ("a", 1, 0.77, 0.61), ("b", 0, 0.41, 0.40), ("b", 1, 0.41, 0.40))
    assert len(compare(b, worse).regressions) == 2
    assert compare(b, worse, abs_floors={"accuracy": 0.05}).ok  # a: 0.03 <= 0.05; b: 0.11 <= 0.05 + 0.085
    assert compare(b, worse, k=5).regressions[0].group == "fusion=a"  # b: 0.11 <= 0.02 + 5 x 0.0283
    assert [f.allowed for f in compare(b, worse, k=0).regressions] == [0.02, 0.02]
    assert compare(b, worse, abs_floor=0.2).ok  # every floor at once
    assert [f.group for f in compare(b, worse, abs_floor=0.2, abs_floors={"accuracy": 0.02}).regressions] == [
        "fusion=a", "fusion=b"]  # one metric's floor wins over --abs-floor


def test_improvement_is_reported_never_a_failure():
    report = compare(baseline(), rows(("a", 0, 0.95, 0.61), ("a", 1, 0.95, 0.61), ("b", 0, 0.52, 0.40),
                                      ("b", 1, 0.52, 0.40)))
    assert report.ok and [(f.group, f.metric) for f in report.improvements] == [("fusion=a", "accuracy")]
    assert "## Improved (1)" in render_report(report) and "ok: every metric within tolerance" in render_report(report)


def test_lower_is_better_metric_regresses_upward():
    b = baseline()
    b.tolerance["macro_f1"] = b.tolerance["macro_f1"].model_copy(update={"higher_is_better": False})
    report = compare(b, rows(("a", 0, 0.80, 0.70), ("a", 1, 0.80, 0.70), ("b", 0, 0.52, 0.30), ("b", 1, 0.52, 0.30)))
    assert [(f.group, f.metric) for f in report.regressions] == [("fusion=a", "macro_f1")]
    assert [(f.group, f.metric) for f in report.improvements] == [("fusion=b", "macro_f1")]


def test_missing_group_metric_and_seed_are_regressions_and_new_groups_are_notes():
    run = rows(("b", 0, 0.52, 0.40), ("c", 0, 0.9, 0.9)).drop("macro_f1")
    report = compare(baseline(), run)
    found = {(f.group, f.metric): f.why for f in report.regressions}
    assert found[("fusion=a", "(group)")] == "group missing from the run"
    assert found[("fusion=b", "macro_f1")] == "metric missing from the run"
    assert found[("fusion=b", "(seeds)")] == "1 of the baseline's 2 seeds ran"
    assert report.notes == ["group 'fusion=c' is not in the baseline (not checked)"]


def test_failed_trial_is_a_regression_even_when_the_other_seed_is_fine():
    run = rows(("a", 0, 0.80, 0.61), ("a", 1, None, None, "failed", "TrialFailure: loss became nan\nmore"),
               ("b", 0, 0.52, 0.40), ("b", 1, 0.52, 0.40))
    report = compare(baseline(), run)
    assert [(f.group, f.metric, f.why) for f in report.regressions] == [
        ("fusion=a", "(trial)", "seed 1 failed: TrialFailure: loss became nan")]
    everything_failed = rows(*[(g, s, None, None, "failed", "boom") for g in "ab" for s in (0, 1)])
    report = compare(baseline(), everything_failed)
    assert len(report.regressions) == 4 and {f.metric for f in report.regressions} == {"(trial)"}


def test_tolerance_pairs_are_parsed_and_typos_rejected():
    assert parse_tolerances(["accuracy=0.05", "macro_f1 = 0"], known=["accuracy", "macro_f1"]) == {
        "accuracy": 0.05, "macro_f1": 0.0}
    for bad in ["accuracy", "accuracy=x", "=0.1", "accuracy=-1", "accuracy=nan"]:
        with pytest.raises(BenchError) as info:
            parse_tolerances([bad])
        assert info.value.field == "--tolerance"
    with pytest.raises(BenchError) as info:
        parse_tolerances(["acuracy=0.1"], known=["accuracy"])
    assert "acuracy" in info.value.message and "accuracy" in info.value.fix


def test_committed_baseline_matches_the_ci_suite():
    b = read_baseline(CI_BASELINE)
    from bench.config.suite import load_suite
    loaded = load_suite(CI_SUITE)
    assert b.suite == loaded.suite.name and b.suite_hash == loaded.text_hash and b.subset is None
    assert set(b.groups) == {"fusion=text_only", "fusion=cross_modal_gated_attention"}
    assert all(g.seeds == 2 for g in b.groups.values())
    # the check is only meaningful if the model learns: cross-modal clearly above its tolerance band
    acc, tol = b.groups["fusion=cross_modal_gated_attention"].metrics["accuracy"], b.tolerance["accuracy"]
    assert acc.mean - (tol.abs_floor + tol.k * acc.std) > 0.35


# ---- the real command, real Ray runs -----------------------------------------------------------

@pytest.fixture(scope="module")
def ci_check(tmp_path_factory, ray_session):
    """`bench check` of the CI suite against its committed baseline (one run for the module, in this
    process on the shared Ray session; `bench run` in a fresh process is covered by test_runner)."""
    run_dir = tmp_path_factory.mktemp("ci") / "run"
    proc = invoke_bench("check", CI_SUITE, "--baseline", CI_BASELINE, "--run-dir", run_dir, "--quiet")
    return proc, run_dir


def test_ci_suite_passes_against_its_committed_baseline(ci_check):
    proc, run_dir = ci_check
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "ok: every metric within tolerance (10 group metrics checked" in proc.stdout
    assert "changed since the baseline was made" not in proc.stderr  # made from this very suite file
    assert pl.read_parquet(run_dir / "trials.parquet").height == 4


def test_baseline_from_the_run_rechecks_clean_and_a_raised_bar_fails(ci_check, tmp_path):
    _, run_dir = ci_check
    fresh = tmp_path / "fresh.json"
    made = invoke_bench("baseline", CI_SUITE, "--from-run", run_dir, "--out", fresh)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "2 groups x 5 metrics from 4 trials" in made.stdout
    assert json.loads(fresh.read_text())["suite_hash"] == json.loads(CI_BASELINE.read_text())["suite_hash"]
    same = invoke_bench("check", CI_SUITE, "--baseline", fresh, "--from-run", run_dir)
    assert same.returncode == 0 and "Improved" not in same.stdout, same.stdout + same.stderr
    raised = json.loads(fresh.read_text())
    raised["groups"]["fusion=text_only"]["metrics"]["macro_f1"]["mean"] = 0.99
    raised["groups"]["fusion=gone"] = raised["groups"]["fusion=text_only"]
    fresh.write_text(json.dumps(raised))
    failed = invoke_bench("check", CI_SUITE, "--baseline", fresh, "--from-run", run_dir)
    assert failed.returncode == 1, failed.stderr[-2000:]
    lines = failed.stdout.splitlines()
    assert any("fusion=text_only" in line and "macro_f1" in line and "0.9900" in line for line in lines)
    assert any("fusion=gone" in line and "group missing from the run" in line for line in lines)


def test_crippled_training_fails_the_check_naming_group_and_metric(tmp_path, registry, ray_session):
    """Real training, crippled, run in this process (the shared Ray); the real `bench check` reads it."""
    from bench.running.runner import run_suite
    from bench.config.suite import load_suite
    suite = yaml.safe_load(CI_SUITE.read_text())
    stage = suite["trial"]["stages"][0]
    stage.update(epochs=0.1, optimizer={**stage["optimizer"], "lr": 1e-7})  # same name, barely trained
    worse = tmp_path / "fusion_small.yaml"
    worse.write_text(yaml.safe_dump(suite, sort_keys=False))
    summary = run_suite(load_suite(worse, registry), registry, run_dir=tmp_path / "run", quiet=True)
    assert summary.ok == 4
    proc = invoke_bench("check", worse, "--baseline", CI_BASELINE, "--from-run", tmp_path / "run")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "changed since the baseline was made" in proc.stderr  # a warning, not the failure
    assert "## Regressions" in proc.stdout and "FAILED" in proc.stdout
    rows_ = [line for line in proc.stdout.splitlines() if line.startswith("| fusion=")]
    assert any("fusion=cross_modal_gated_attention" in r and "| accuracy " in r for r in rows_), proc.stdout
