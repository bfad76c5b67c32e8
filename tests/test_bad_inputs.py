"""The catalogue of bad inputs, through the real `bench` command line.

Every case runs the CLI in a fresh process and expects exit code 2, a message naming the
file and/or the field, a fix, and no traceback. (Bad suite contents checked in-process live in
test_suite_validation.py; bad table files at the plugin level in test_dataset_table.py.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl
import pytest
import yaml
from fixtures import product_files as pf

from bench.check import build_baseline, dump_baseline
from bench.results import RunDir
from conftest import run_bench, tiny_trial

ROOT = Path(__file__).resolve().parents[1]
CI_SUITE = ROOT / "suites" / "ci" / "fusion_small.yaml"
CI_BASELINE = ROOT / "suites" / "ci" / "baselines" / "fusion_small.json"


@dataclass
class Case:
    id: str
    args: Callable[[Path], list]  # builds the inputs under tmp_path, returns the CLI arguments
    words: list[str]  # each must appear in stderr (file / field, problem, fix)
    usage: bool = False  # click's own usage error ("Usage: ... Error: ...") rather than a BenchError


# ---- builders -----------------------------------------------------------------------------------

def suite(tmp: Path, trial: dict | None = None, name: str = "suite.yaml", **extra) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({"name": "bad", "trial": trial or tiny_trial(), **extra}), encoding="utf-8")
    return path


def text(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def table_suite(tmp: Path, task: str = "classification", **options) -> Path:
    """A suite over the `table` dataset: items.csv (id, name, category) unless told otherwise."""
    if not (tmp / "items.csv").exists():
        pf.write_csv(tmp / "items.csv", ["id", "name", "category"],
                     [[f"i{i}", f"product {i}", "ab"[i % 2]] for i in range(8)])
    opts = {"path": str(tmp / "items.csv"), "columns": {"id": "id", "title": "name", "label": "category"}, **options}
    return suite(tmp, tiny_trial(dataset={"name": "table", "options": opts}, task=task))


def latin1_table_suite(tmp: Path) -> Path:
    text(tmp, "items.csv", b"id,name,category\ni0,caf\xe9,a\ni1,tea,b\n")
    return table_suite(tmp)


def run_folder(tmp: Path) -> Path:
    """A finished run with two rows, made by hand (no training)."""
    run = RunDir(tmp / "run")
    for seed in (0, 1):
        run.write_row({"trial_key": f"k{seed}", "fusion": "text_only", "seed": seed, "status": "ok", "error": "",
                       "accuracy": 0.5 + seed / 10})
    run.write_meta({"suite": "other", "axes": ["fusion", "seed"]})
    run.consolidate()
    return run.path


def baseline_file(tmp: Path, suite_name: str = "fusion_small") -> Path:
    rows = pl.DataFrame({"trial_key": ["a"], "fusion": ["text_only"], "seed": [0], "status": ["ok"], "accuracy": [0.5]})
    path = tmp / "baseline.json"
    path.write_text(dump_baseline(build_baseline(rows, suite=suite_name, suite_hash="0", group_by=["fusion"],
                                                 subset=None)))
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not parquet")
    return path


# ---- the catalogue ------------------------------------------------------------------------------

CASES = [
    # suite files (bench validate)
    Case("validate: nonexistent suite path", lambda t: ["validate", t / "nope.yaml"],
         ["nope.yaml", "suite file not found", "fix: check the path"]),
    Case("validate: a directory instead of a file", lambda t: ["validate", t],
         ["{tmp}: this is a folder, not a suite file", "fix: pass a .yaml file"]),
    Case("validate: YAML indented with a tab", lambda t: ["validate", text(t, "tab.yaml", "name: x\ntrial:\n\tfusion: a\n")],
         ["tab.yaml", "line 3, column 1", "not valid YAML", "fix: indent with spaces"]),
    Case("validate: included file missing",
         lambda t: ["validate", text(t, "inc.yaml", "name: x\ninclude: base/nothere.yaml\n")],
         ["inc.yaml: include", "included file not found", "nothere.yaml", "fix: check the include path"]),
    Case("validate: include entry is not a path", lambda t: ["validate", text(t, "inc.yaml", "name: x\ninclude: [3]\n")],
         ["inc.yaml: include", "not a file path", "fix: write include: base.yaml"]),
    Case("validate: unknown encoder name",
         lambda t: ["validate", suite(t, tiny_trial(encoders={"text": {"name": "hf_txt"}}))],
         ["suite.yaml", "trial.encoders.text.name", "unknown encoder plugin 'hf_txt'", "did you mean 'hf_text'"]),
    Case("validate: encoder option of the wrong type",
         lambda t: ["validate", suite(t, tiny_trial(encoders={"text": {"name": "hf_text",
                                                                      "options": {"max_length": "long"}}}))],
         ["suite.yaml", "trial.encoders.text.options", "max_length", "valid integer", "fix: allowed options"]),
    Case("validate: --subset 0", lambda t: ["validate", CI_SUITE, "--subset", "0"],
         ["--subset", "0 is not in the range x>=1"], usage=True),

    # bench run: CLI arguments (click rejects them before anything loads)
    Case("run: --max-concurrent 0", lambda t: ["run", CI_SUITE, "--max-concurrent", "0"],
         ["--max-concurrent", "0 is not in the range x>=1"], usage=True),
    Case("run: --subset -1", lambda t: ["run", CI_SUITE, "--subset", "-1"],
         ["--subset", "-1 is not in the range x>=1"], usage=True),
    Case("run: unknown flag", lambda t: ["run", CI_SUITE, "--frobnicate"], ["No such option", "--frobnicate"], usage=True),
    Case("run: --out is a file", lambda t: ["run", CI_SUITE, "--out", text(t, "f.txt", "x")],
         ["--out", "f.txt", "is a file"], usage=True),
    Case("run: --cache-dir is a file", lambda t: ["run", CI_SUITE, "--cache-dir", text(t, "f.txt", "x")],
         ["--cache-dir", "f.txt", "is a file"], usage=True),
    Case("unknown command", lambda t: ["rnu", CI_SUITE], ["No such command 'rnu'", "Did you mean 'run'"], usage=True),

    # bench run: dataset problems found by the preflight, before Ray starts
    Case("run: table dataset file missing", lambda t: ["run", table_suite(t, path=str(t / "missing.csv"))],
         ["suite.yaml", "trial.dataset.options.path", "file not found", "missing.csv", "fix: check the spelling"]),
    Case("run: table dataset column missing",
         lambda t: ["run", table_suite(t, columns={"id": "id", "title": "title", "label": "category"})],
         ["items.csv", "columns.title", "column 'title'", "its columns are: id, name, category", "suite.yaml",
          "fix: set columns.title to one of the columns above"]),
    Case("run: table dataset not UTF-8", lambda t: ["run", latin1_table_suite(t)],
         ["items.csv", "encoding", "line 2 is not valid utf-8", "fix: set encoding: latin-1"]),
    Case("run: image folder option names a file",
         lambda t: ["run", table_suite(t, images=str(text(t, "not_a_folder.txt", "x")))],
         ["items.csv", "images", "not_a_folder.txt is a file, not a folder", "fix: set images to the folder itself"]),
    Case("run: matching task on data without groups", lambda t: ["run", table_suite(t, task="matching")],
         ["suite.yaml", "trial.task", "does not support task 'matching'", "fix: classification needs a label column"]),

    # bench leaderboard
    Case("leaderboard: missing folder", lambda t: ["leaderboard", t / "nowhere"],
         ["nowhere", "run folder not found", "fix: pass a folder under results/"]),
    Case("leaderboard: folder without results", lambda t: ["leaderboard", t],
         ["has no finished trials yet", "fix: run or resume the suite first"]),
    Case("leaderboard: corrupt trials.parquet", lambda t: ["leaderboard", corrupt(t / "trials.parquet").parent],
         ["trials.parquet", "corrupt results table", "fix: delete it"]),
    Case("leaderboard: corrupt row file", lambda t: ["leaderboard", corrupt(t / "rows" / "abc.parquet").parents[1]],
         ["rows/abc.parquet", "corrupt result file", "fix: delete it and run `bench run --resume`"]),
    Case("leaderboard: --group-by an axis the run lacks", lambda t: ["leaderboard", run_folder(t), "--group-by", "fuson"],
         ["run", "--group-by", "no column 'fuson'", "fix: use one of the run's axes: fusion, seed"]),
    Case("leaderboard: --sort by a metric the run lacks", lambda t: ["leaderboard", run_folder(t), "--sort", "acc"],
         ["--sort", "no metric 'acc'", "fix: use one of: accuracy"]),
    Case("leaderboard: --output in a missing folder",
         lambda t: ["leaderboard", run_folder(t), "--output", t / "no" / "such" / "board.md"],
         ["board.md", "--output", "cannot write the leaderboard", "fix: pass a file path inside an existing"]),
    Case("leaderboard: unknown --format", lambda t: ["leaderboard", run_folder(t), "--format", "pdf"],
         ["--format", "'pdf' is not one of"], usage=True),

    # bench data inspect
    Case("data inspect: unknown dataset", lambda t: ["data", "inspect", "tabel", "--option", "path=x.csv"],
         ["DATASET", "unknown dataset plugin 'tabel'", "did you mean 'table'"]),
    Case("data inspect: --options-json not JSON",
         lambda t: ["data", "inspect", "table", "--options-json", "{path: x.csv"],
         ["--options-json", "not valid JSON", "fix: write an object"]),
    Case("data inspect: option without a value", lambda t: ["data", "inspect", "table", "--option", "path"],
         ["--option", "'path' is not key=value", "fix: write --option path=items.csv"]),

    # bench check / bench baseline
    Case("check: missing baseline", lambda t: ["check", CI_SUITE, "--baseline", t / "missing.json"],
         ["missing.json", "--baseline", "baseline file not found", "fix: pass the JSON file written by `bench baseline"]),
    Case("check: corrupt baseline JSON", lambda t: ["check", CI_SUITE, "--baseline", text(t, "b.json", '{"suite": ')],
         ["b.json", "line 1, column 11", "not valid JSON", "fix: regenerate it with `bench baseline"]),
    Case("check: JSON that is not a baseline",
         lambda t: ["check", CI_SUITE, "--baseline", text(t, "b.json", '{"suite": "fusion_small"}')],
         ["b.json", "not a mic-bench baseline", "groups: required field is missing", "fix: regenerate it"]),
    Case("check: baseline of another suite",
         lambda t: ["check", CI_SUITE, "--baseline", baseline_file(t, suite_name="smoke")],
         ["baseline.json", "suite", "the baseline is for suite 'smoke', not 'fusion_small'",
          "fix: pass the baseline of this suite"]),
    Case("check: --subset other than the baseline's", lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE,
                                                                 "--subset", "5"],
         ["--subset", "differs from the baseline's subset", "fix: drop --subset"]),
    Case("check: --tolerance for a metric the baseline lacks",
         lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--tolerance", "acuracy=0.1"],
         ["--tolerance", "no metric 'acuracy'", "fix: use one of: accuracy"]),
    Case("check: negative --k", lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--k", "-1"],
         ["--k", "-1.0 is not in the range x>=0"], usage=True),
    Case("check: negative --abs-floor", lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--abs-floor", "-0.1"],
         ["--abs-floor", "-0.1 is not in the range x>=0"], usage=True),
    Case("check: --run-dir already holds rows",
         lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--run-dir", run_folder(t)],
         ["run", "--run-dir", "already holds trial rows", "fix: pass a new folder, or --from-run"]),
    Case("baseline: --out is a folder", lambda t: ["baseline", CI_SUITE, "--out", t],
         ["--out", "is a directory"], usage=True),
    Case("baseline: --out missing", lambda t: ["baseline", CI_SUITE], ["Missing option '--out'"], usage=True),
    Case("baseline: --tolerance without a number",
         lambda t: ["baseline", CI_SUITE, "--out", t / "b.json", "--tolerance", "accuracy"],
         ["--tolerance", "'accuracy' is not METRIC=ABS", "fix: write e.g. --tolerance accuracy=0.05"]),
    Case("baseline: --from-run of another suite",
         lambda t: ["baseline", CI_SUITE, "--out", t / "b.json", "--from-run", run_folder(t)],
         ["run", "--from-run", "no trials of suite 'fusion_small'", "fix: pass a run folder of this suite"]),

    # bench plugins
    Case("plugins: misspelled flag", lambda t: ["plugins", "--jsn"], ["No such option '--jsn'", "Did you mean '--json'"],
         usage=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_a_clear_message(case, tmp_path):
    args = case.args(tmp_path)
    if args[0] == "run" and "--out" not in args:
        args += ["--out", tmp_path / "results"]  # if an input slipped through, nothing lands in the checkout
    proc = run_bench(*args, timeout=120)
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    if case.usage:
        assert "Usage:" in err and "Error:" in err, err
    else:
        assert "error: " in err and "\n  fix: " in err, err
    for word in case.words:
        word = word.replace("{tmp}", str(tmp_path))
        assert word in err, f"{word!r} not in:\n{err}"
    assert not list(tmp_path.rglob("tune")), "Ray started for an input that should have failed up front"


def test_the_catalogue_with_the_in_process_suite_cases_has_at_least_40_entries():
    from test_suite_validation import BAD_SUITES

    assert len(CASES) + len(BAD_SUITES) + 1 >= 40  # +1: test_missing_suite_file
