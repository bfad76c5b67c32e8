"""Run progress: the live view on a terminal, plain lines elsewhere, and what both report."""
from __future__ import annotations

import io
import re
import time

import numpy as np
from ray import cloudpickle

from bench.reporting.leaderboard import LeaderboardSpec
from bench.reporting.progress import RunProgress, RunState, best_row_text
from bench.reporting.results import load_run
from report_runs import N_LABELS, noisy_predictions, suite_copy, trial, write_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_eta_follows_the_pace_of_trials_finished_in_this_session():
    state = RunState(total=10, kept=4)
    assert state.done == 4 and state.eta() is None and "eta -" in state.summary()
    state.started -= 30  # 30 s in, two trials done here: 15 s each, four left
    state.done = 6
    assert abs(state.eta() - 60) < 1
    assert state.summary().startswith("6/10 done · 0 running · 0 failed · elapsed 30s · eta ~1m00s")


def test_plain_lines_when_the_stream_is_not_a_terminal():
    out = io.StringIO()
    with RunProgress("smoke", 2, stream=out) as progress:
        assert not progress.live_view
        progress.trial_started("k1", "fusion=late seed=0")
        progress.trial_evaluated("k1", "fusion=late seed=0", {"stage": "train", "epoch": 1.0, "train_loss": 0.81234,
                                                             "dev_macro_f1": 0.64, "train_samples_per_s": 312.44})
        progress.trial_finished("k1", {"status": "ok", "macro_f1": 0.5, "wall_s": 3.0}, "fusion=late seed=0")
        progress.trial_finished("k2", {"status": "failed", "wall_s": 1.0}, "fusion=film seed=0")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\x1b" not in out.getvalue()  # no escape codes in logs
    assert lines[0].startswith("[0/2] start  fusion=late seed=0 (1 running; elapsed ")
    assert lines[1] == ("[0/2] epoch  fusion=late seed=0: epoch 1 · loss 0.8123 · dev_macro_f1 0.640 · "
                        "312.4 samples/s")
    assert lines[2].startswith("[1/2] ok     fusion=late seed=0 macro_f1=0.500 (3s;")
    assert lines[3].startswith("[2/2] failed fusion=film seed=0") and lines[3].endswith("failed 1)")


def test_epoch_lines_name_a_stage_other_than_train_and_the_dev_metric_there_is():
    from bench.reporting.progress import evaluation_line

    state = RunState(total=3)
    line = evaluation_line(state, "objective=simcse", {"stage": "adapt", "epoch": 0.5, "train_loss": 2.0})
    assert line == "[0/3] epoch  objective=simcse: stage adapt epoch 0.5 · loss 2.0000"
    pairs = evaluation_line(state, "fusion=late", {"epoch": 2.0, "train_loss": 0.3, "dev_pair_ap": 0.812})
    assert pairs.endswith("epoch 2 · loss 0.3000 · dev_pair_ap 0.812")


def test_pair_matching_trials_show_their_metric_when_they_end():
    from bench.reporting.progress import trial_line

    state = RunState(total=1, done=1)
    line = trial_line(state, {"status": "ok", "pair_f1": 0.71, "pair_ap": 0.8, "wall_s": 5.0}, "fusion=late seed=0")
    assert "pair_f1=0.710" in line
    no_match = trial_line(state, {"status": "ok", "pair_f1": None, "pair_ap": 0.8, "wall_s": 5.0}, "seed=0")
    assert "pair_ap=0.800" in no_match


def test_progress_goes_to_stdout_when_stdout_is_a_file(tmp_path, monkeypatch):
    import sys

    from bench.reporting.progress import default_stream

    with open(tmp_path / "log.txt", "w") as log:
        monkeypatch.setattr(sys, "stdout", log)
        assert default_stream() is log
        assert not RunProgress("smoke", 1).live_view


def test_a_run_writing_to_a_log_shows_each_trial_start_and_epoch_as_it_happens(smoke_run):
    """`bench run ... > log.txt`: the start line is in the file while the trial still runs, then a
    line per epoch, then the end line (read from the file as it grows, not after the run). The smoke
    suite's two trials one after the other (conftest.smoke_run, shared with test_runner)."""
    code, _, text, seen_start_alone = smoke_run
    assert code == 0
    lines = [l for l in text.splitlines() if l.startswith("[")]
    assert seen_start_alone  # the start line was written while the trial was running
    assert lines[0].startswith("[0/2] start  fusion=text_only seed=0")
    epochs = [l for l in lines if " epoch  fusion=text_only" in l]
    assert len(epochs) == 2 and re.search(r"epoch 1 · loss \d\.\d{4} · dev_macro_f1 \d\.\d{3} · [\d.]+ samples/s",
                                          epochs[0])
    assert lines[3].startswith("[1/2] ok     fusion=text_only seed=0 macro_f1=")
    assert lines[-1].startswith("[2/2] ok     fusion=image_only seed=0 macro_f1=")


def test_live_view_shows_counts_best_row_and_finished_trials():
    out = io.StringIO()
    with RunProgress("smoke", 3, kept=1, stream=out, force_terminal=True) as progress:
        assert progress.live_view
        progress.trial_started("a")
        progress.trial_started("b")
        time.sleep(0.6)  # at least one refresh while both run
        progress.trial_finished("a", {"status": "ok", "accuracy": 0.75, "wall_s": 2.0}, "fusion=late seed=0",
                                best="late  accuracy 0.750 (1 seed)")
    text = ANSI.sub("", out.getvalue())
    assert "1/3 done · 2 running · 0 failed" in text
    assert "2/3 done · 1 running · 0 failed" in text
    assert "best  late  accuracy 0.750 (1 seed)" in text
    assert re.search(r"elapsed \ds · eta ~\ds", text)
    assert "[2/3] ok     fusion=late seed=0 accuracy=0.750" in text


def test_quiet_means_plain_lines_even_on_a_terminal():
    out = io.StringIO()
    with RunProgress("smoke", 1, quiet=True, stream=out, force_terminal=True) as progress:
        progress.trial_finished("a", {"status": "ok", "wall_s": 1.0}, "seed=0")
    assert not progress.live_view and out.getvalue().startswith("[1/1] ok")


def test_progress_survives_being_saved_with_the_tune_experiment():
    progress = RunProgress("smoke", 2, stream=io.StringIO(), force_terminal=True)
    progress.trial_started("a")
    restored = cloudpickle.loads(cloudpickle.dumps(progress))  # Tune saves its callbacks (tuner.pkl)
    assert restored.state.running == {"a"} and restored.console is not None


def test_best_row_is_the_leaderboard_first_row(tmp_path):
    true = np.random.default_rng(0).integers(0, N_LABELS, 100)
    run = write_run(tmp_path / "run", [
        trial(f"{g}{s}", {"fusion": g}, s, true, noisy_predictions(true, acc, 10 * i + s))
        for i, (g, acc) in enumerate((("text_only", 0.4), ("late", 0.9))) for s in (0, 1)],
        suite_copy("b", {"fusion": ["text_only", "late"], "seed": [0, 1]}))
    _, rows = load_run(run)
    text = best_row_text(rows, LeaderboardSpec(group_by=["fusion"], sort="accuracy"))
    mean = rows.filter(rows["fusion"] == "late")["accuracy"].mean()
    assert text.startswith(f"late  accuracy {mean:.3f} ± ") and text.endswith("(2 seeds)")
    two_axes = best_row_text(rows, LeaderboardSpec(group_by=["fusion", "seed"], sort="accuracy"))
    assert two_axes.startswith("fusion=late seed=") and two_axes.endswith("(1 seed)")
    assert best_row_text(rows.head(0), LeaderboardSpec(group_by=["fusion"])) == ""


def test_failed_trial_line_carries_the_first_line_of_its_error():
    from bench.reporting.progress import trial_line

    state = RunState(total=2, done=1, failed=1)
    line = trial_line(state, {"status": "failed", "error": "weights file not found\n  fix: give a file", "wall_s": 1.0},
                      "fusion=late seed=0")
    assert "failed" in line and "error: weights file not found" in line and "fix:" not in line
    ok = trial_line(state, {"status": "ok", "error": "", "macro_f1": 0.5, "wall_s": 1.0}, "fusion=late seed=0")
    assert "error" not in ok and "macro_f1=0.500" in ok
