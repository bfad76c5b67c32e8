"""Leaderboard plots from hand-made run folders: the drawn numbers are the leaderboard's numbers."""
from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from PIL import Image

from bench.reporting.plots import figures, render_plots, write_plots
from bench.reporting.write import run_leaderboard_spec
from bench.reporting.results import load_run
from conftest import run_bench
from report_runs import N_LABELS, matching_run, noisy_predictions, suite_copy, trial, write_run


def _true(n=120, seed=0):
    return np.random.default_rng(seed).integers(0, N_LABELS, n)


@pytest.fixture
def fusion_run(tmp_path):
    true = _true()
    trials = [trial(f"{g}{s}", {"fusion": g}, s, true, noisy_predictions(true, acc, 10 * s + i),
                    train_samples_per_s=speed + s)
              for i, (g, acc, speed) in enumerate((("late", 0.8, 50.0), ("text_only", 0.5, 400.0)))
              for s in (0, 1)]
    return write_run(tmp_path / "fusion", trials, suite_copy("fusion", {"fusion": ["late", "text_only"], "seed": [0, 1]}))


@pytest.fixture
def ssl_run(tmp_path):
    true = _true(80, 1)
    trials = [trial(f"{m}-{f}-{s}", {"method": m, "finetune_fraction": f}, s, true,
                    noisy_predictions(true, base + f / 4, hash((m, f, s)) % 1000))
              for m, base in (("origin", 0.3), ("convirt", 0.5)) for f in (0.05, 0.25, 1.0) for s in (0, 1)]
    suite = suite_copy("ssl", {"method": ["origin", "convirt"], "finetune_fraction": [0.05, 0.25, 1.0], "seed": [0, 1]},
                       group_by=["method", "finetune_fraction"], metrics=["accuracy", "macro_f1"],
                       pivot={"rows": "method", "columns": "finetune_fraction", "value": "accuracy",
                              "extra_values": ["macro_f1"]})
    return write_run(tmp_path / "ssl", trials, suite)


def _bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _figures(run):
    _, rows = load_run(run)
    return rows, figures(rows, run_leaderboard_spec(run, rows))


def test_bar_chart_draws_group_means_best_first_with_seed_spread(fusion_run):
    rows, figs = _figures(fusion_run)
    assert set(figs) == {"bars_accuracy.png", "bars_macro-f1.png", "quality-vs-cost_macro-f1.png"}
    ax = figs["bars_accuracy.png"].axes[0]
    (bars,) = _bars(ax)
    by_y = sorted(zip([p.get_y() for p in bars.patches], [p.get_width() for p in bars.patches]), reverse=True)
    means = rows.group_by("fusion").agg(pl.col("accuracy").mean()).sort("accuracy", descending=True)
    assert [w for _, w in by_y] == pytest.approx(means["accuracy"].to_list())  # top bar = best group
    top_down = sorted(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()]), reverse=True)
    assert [label for _, label in top_down] == means["fusion"].to_list()
    spread = bars.errorbar.lines[2][0].get_segments()  # one horizontal segment per bar: mean ± std
    stds = rows.group_by("fusion").agg(pl.col("accuracy").std())
    assert sorted(abs(s[1][0] - s[0][0]) / 2 for s in spread) == pytest.approx(sorted(stds["accuracy"].to_list()))


def test_quality_vs_cost_puts_each_group_at_its_speed_and_macro_f1(fusion_run):
    rows, figs = _figures(fusion_run)
    ax = figs["quality-vs-cost_macro-f1.png"].axes[0]
    x, y = _errorbars(ax)[0].lines[0].get_data()
    means = rows.group_by("fusion", maintain_order=True).agg(pl.col("train_samples_per_s").mean(), pl.col("macro_f1").mean())
    drawn = [v for point in sorted(zip(x, y)) for v in point]
    expected = [v for point in sorted(zip(means["train_samples_per_s"], means["macro_f1"])) for v in point]
    assert drawn == pytest.approx(expected)
    assert ax.get_xlabel().startswith("train samples / s")


def test_ssl_pivot_gets_one_curve_per_method_across_fractions(ssl_run):
    rows, figs = _figures(ssl_run)
    assert {"curve_accuracy_by_finetune-fraction.png", "curve_macro-f1_by_finetune-fraction.png"} <= set(figs)
    ax = figs["curve_accuracy_by_finetune-fraction.png"].axes[0]
    assert ax.get_xscale() == "log"  # 0.05 ... 1.0
    lines = {c.get_label(): c.lines[0].get_data() for c in _errorbars(ax)}
    assert set(lines) == {"origin", "convirt"}
    for method, (x, y) in lines.items():
        expected = (rows.filter(pl.col("method") == method).group_by("finetune_fraction")
                    .agg(pl.col("accuracy").mean()).sort("finetune_fraction"))
        assert list(x) == expected["finetune_fraction"].to_list()
        assert list(y) == pytest.approx(expected["accuracy"].to_list())


def test_matching_runs_get_a_retrieval_chart_and_classification_runs_do_not(tmp_path, fusion_run):
    rows, figs = _figures(matching_run(tmp_path / "m", {"omni": [0.9, 0.8], "triplet": [0.6, 0.62]}))
    assert {"retrieval.png", "bars_f1.png"} <= set(figs)
    ax = figs["retrieval.png"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ndcg@10", "mar@10", "p@10", "map@10", "f1"]
    ndcg = [p.get_height() for p in _bars(ax)[0].patches]
    assert ndcg == pytest.approx([0.85, 0.61])  # f1-ranked order: omni, triplet
    assert "retrieval.png" not in _figures(fusion_run)[1]


def test_render_and_write_plots_give_real_pngs_and_drop_stale_ones(fusion_run):
    _, rows = load_run(fusion_run)
    spec = run_leaderboard_spec(fusion_run, rows)
    stale = fusion_run / "plots" / "old_plot.png"
    stale.parent.mkdir()
    stale.write_bytes(b"not a plot")
    written = write_plots(fusion_run, rows, spec)
    assert not stale.exists()
    assert {p.name for p in written} == set(render_plots(rows, spec)) == {p.name for p in (fusion_run / "plots").iterdir()}
    for p in written:
        with Image.open(io.BytesIO(p.read_bytes())) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 100


def test_a_run_with_only_failed_trials_has_no_plots(tmp_path):
    run = write_run(tmp_path / "failed", [], suite_copy("f", {"fusion": ["a"]}), failed=[{"key": "k", "axes": {"fusion": "a"}}])
    _, rows = load_run(run)
    assert figures(rows, run_leaderboard_spec(run, rows)) == {}
    assert write_plots(run, rows, run_leaderboard_spec(run, rows)) == []


def test_bench_plot_command_rewrites_plots_and_the_html_page(fusion_run):
    proc = run_bench("plot", fusion_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = set(proc.stdout.split())
    assert str(fusion_run / "leaderboard.html") in listed
    assert {str(p) for p in (fusion_run / "plots").glob("*.png")} <= listed and len(listed) == 4
    missing = run_bench("plot", fusion_run / "nope")
    assert missing.returncode == 2 and "run folder not found" in missing.stderr
