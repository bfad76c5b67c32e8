"""The headline suite: a 2-trial subset under Ray Tune in CI; the whole suite as a heavy test."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import invoke_bench, run_bench

SUITE = Path(__file__).resolve().parents[1] / "suites" / "mic_fusion.yaml"


def _rows(out: Path) -> pl.DataFrame:
    return pl.read_parquet(next(out.glob("mic_fusion/*/trials.parquet")))


def test_two_trial_subset_runs_under_ray(tmp_path, ray_session):
    """In this process on the shared Ray session (the subprocess path is covered by test_runner)."""
    proc = invoke_bench("run", SUITE, "--subset", "40", "--only", "seed=0",
                     "--only", "fusion=text_only,cross_modal_gated_attention", "--out", tmp_path, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path)
    assert sorted(rows["fusion"]) == ["cross_modal_gated_attention", "text_only"]
    assert set(rows["status"]) == {"ok"} and (rows["n_test"] <= 40).all()
    board = next(tmp_path.glob("mic_fusion/*/leaderboard.md")).read_text()
    assert "macro_f1_B (reference)" in board and "0.729" in board  # the seed table beside ours
    assert "as the suite states it: published figures on other data: macro-F1 on Japanese" in board


@pytest.mark.heavy
def test_cross_modal_beats_both_unimodal_baselines(tmp_path):
    proc = run_bench("run", SUITE, "--out", tmp_path, "--quiet", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    f1 = _rows(tmp_path).group_by("fusion").agg(pl.col("macro_f1").mean())
    score = dict(zip(f1["fusion"], f1["macro_f1"]))
    assert len(score) == 5
    assert score["cross_modal_gated_attention"] > max(score["text_only"], score["image_only"])
