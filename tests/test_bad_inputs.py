"""The catalogue of bad inputs and faults, through the real `bench` command line.

Every case runs the CLI (click's own entry, in this process; `fresh` cases in a new process) and
expects exit code 2, a message naming the file and/or the field, a fix, and no traceback.
docs/bad-inputs.md is generated from these cases (`python tests/test_bad_inputs.py --write-doc`)
and checked against them, so the two cannot drift. (Bad suite contents checked in-process live
in test_suite_validation.py; bad table files at the plugin level in test_dataset_table.py.)
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import product_files as pf  # noqa: E402

from bench.reporting.baseline import build_baseline, dump_baseline  # noqa: E402
from bench.data.image_files import MANIFEST_NAME  # noqa: E402
from bench.storage.paths import CACHE_MARKER  # noqa: E402
from bench.reporting.results import RunDir  # noqa: E402
from conftest import run_bench, tiny_trial  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"
CI_SUITE = ROOT / "suites" / "ci" / "fusion_small.yaml"
CI_BASELINE = ROOT / "suites" / "ci" / "baselines" / "fusion_small.json"


@dataclass
class Case:
    id: str
    args: Callable[[Path], list]  # builds the inputs under tmp_path, returns the CLI arguments
    words: list[str]  # each must appear in stderr (file / field, problem, fix)
    usage: bool = False  # click's own usage error ("Usage: ... Error: ...") rather than a BenchError
    fresh: bool = False  # needs its own process (starts Ray, or a fresh entry-point scan)
    heavy: bool = False  # slow (a Ray start or a long network wait): not in the fast set
    env: dict | None = None  # extra environment variables (in-process cases: set for the call only)
    section: str = ""


# ---- builders -----------------------------------------------------------------------------------

def suite(tmp: Path, trial: dict | None = None, name: str = "suite.yaml", **extra) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({"name": "bad", "trial": trial or tiny_trial(), **extra}), encoding="utf-8")
    return path


def named(tmp: Path, suite_name) -> Path:
    """A valid suite but for its name (written as JSON, which YAML reads, so any string survives)."""
    path = tmp / "suite.yaml"
    path.write_text(json.dumps({"name": suite_name, "trial": tiny_trial()}), encoding="utf-8")
    return path


def axis(tmp: Path, name, values=(0, 1)) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(json.dumps({"name": "bad", "trial": tiny_trial(), "matrix": {name: list(values)}}), encoding="utf-8")
    return path


def space(tmp: Path, name: str, spec: dict, **search) -> Path:
    return suite(tmp, search={"space": {name: spec}, **search})


def stage(tmp: Path, **fields) -> Path:
    return suite(tmp, tiny_trial(stages=[{"objectives": ["cross_entropy"], "epochs": 1, "batch_size": 16, **fields}]))


def text(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def yaml_suite(tmp: Path, body: str) -> Path:
    """A suite whose trial is the tiny one, plus raw YAML text (anchors, aliases, special floats)."""
    base = yaml.safe_dump({"name": "bad", "trial": tiny_trial()})
    return text(tmp, "suite.yaml", base + body)


def alias_bomb(levels: int = 9) -> str:
    """Billion laughs: nine levels of nine aliases stand for 9**9 strings in a 1 KB file."""
    lines = ["bomb:", "  a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def table_suite(tmp: Path, task: str = "classification", **options) -> Path:
    """A suite over the `table` dataset: items.csv (id, name, category) unless told otherwise."""
    if not (tmp / "items.csv").exists():
        pf.write_csv(tmp / "items.csv", ["id", "name", "category"],
                     [[f"i{i}", f"product {i}", "ab"[i % 2]] for i in range(8)])
    opts = {"path": str(tmp / "items.csv"), "columns": {"id": "id", "title": "name", "label": "category"}, **options}
    return suite(tmp, tiny_trial(dataset={"name": "table", "options": opts}, task=task))


def pair_suite(tmp: Path, task: str = "pairs", spoil: Callable[[str], str] | None = None) -> Path:
    """A task-pairs suite over a copy of the DeepMatcher fixture; ``spoil`` edits its test.csv."""
    import shutil

    folder = tmp / "abt_buy"
    shutil.copytree(ROOT / "tests" / "fixtures" / "deepmatcher_abt_buy", folder)
    if spoil is not None:
        (folder / "test.csv").write_text(spoil((folder / "test.csv").read_text()))
    return suite(tmp, tiny_trial(dataset={"name": "deepmatcher", "options": {"path": str(folder)}}, task=task,
                                 encoders={"text": tiny_trial()["encoders"]["text"]},
                                 stages=[{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 8}]))


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


def ci_run_without_metrics(tmp: Path) -> Path:
    """A run folder of the CI suite (its real trial keys, at the baseline's subset) whose rows hold no metric."""
    from bench.api.plugins import get_registry
    from bench.config.suite import load_suite
    subset = json.loads(CI_BASELINE.read_text())["subset"]
    run = RunDir(tmp / "run")
    for t in load_suite(CI_SUITE, get_registry(), subset=subset).trials:
        run.write_row({"trial_key": t.key, **t.axes, "status": "ok", "error": "", "wall_s": 1.0})
    run.write_meta({"suite": "fusion_small", "axes": ["fusion", "seed"]})
    run.consolidate()
    return run.path


def baseline_file(tmp: Path, suite_name: str = "fusion_small") -> Path:
    rows = pl.DataFrame({"trial_key": ["a"], "fusion": ["text_only"], "seed": [0], "status": ["ok"], "accuracy": [0.5]})
    path = tmp / "baseline.json"
    path.write_text(dump_baseline(build_baseline(rows, None, suite=suite_name, suite_hash="0", group_by=["fusion"],
                                                 subset=None, run_seeds=1)[0]))
    return path


def edited_baseline(tmp: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads(CI_BASELINE.read_text())
    edit(data)
    path = tmp / "baseline.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # json writes NaN as NaN, which json.loads reads back
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not parquet")
    return path


def silent_port() -> int:
    """A TCP port that accepts connections and never says a word (not a Ray cluster)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(16)], daemon=True).start()
    return port


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# ---- images: a table over eight pictures, one of them spoiled --------------------------------------

SPOILT = "i3"  # the item whose picture each image case spoils


def picture_options(tmp: Path, spoil: Callable[[Path, Path], str | None] | None = None, **options) -> dict:
    """Options of a `table` dataset: items.csv (id, name, category, photo) and images/i0.jpg ...
    i7.jpg; ``spoil(picture, tmp)`` may break item i3's file and return another photo cell for it."""
    folder = tmp / "images"
    cells = {f"i{i}": f"i{i}.jpg" for i in range(8)}
    for i in range(8):
        pf.tiny_image(folder / f"i{i}.jpg", i)
    if spoil is not None:
        cells[SPOILT] = spoil(folder / f"{SPOILT}.jpg", tmp) or cells[SPOILT]
    pf.write_csv(tmp / "items.csv", ["id", "name", "category", "photo"],
                 [[item, f"product {item}", "ab"[i % 2], cells[item]] for i, item in enumerate(cells)])
    columns = {"id": "id", "title": "name", "label": "category", "image": "photo"}
    return {"path": str(tmp / "items.csv"), "images": "images", "columns": columns, **options}


def picture_suite(tmp: Path, spoil=None, **options) -> Path:
    opts = picture_options(tmp, spoil, **options)
    return table_suite(tmp, **{k: v for k, v in opts.items() if k != "path"})


def inspect_pictures(tmp: Path, spoil=None, **options) -> list:
    return ["data", "inspect", "table", "--options-json", json.dumps(picture_options(tmp, spoil, **options))]


def empty_file(picture: Path, tmp: Path) -> None:
    picture.write_bytes(b"")


def cut_in_half(picture: Path, tmp: Path) -> None:
    pf.truncated_image(picture)


def text_as_jpg(picture: Path, tmp: Path) -> None:
    picture.write_text("sku,title\ni3,kettle\n", encoding="utf-8")


def bomb(picture: Path, tmp: Path) -> None:
    """A 1 KB PNG (named .jpg, as scraped files often are) declaring a 100 000 x 100 000 canvas."""
    picture.write_bytes(pf.png_declaring(100_000, 100_000))


def folder_instead(picture: Path, tmp: Path) -> None:
    picture.unlink()
    picture.mkdir()


def dangling_link(picture: Path, tmp: Path) -> None:
    picture.unlink()
    picture.symlink_to(picture.parent / "deleted.jpg")


def removed(picture: Path, tmp: Path) -> None:
    picture.unlink()


def no_cell(picture: Path, tmp: Path) -> str:
    return " "  # an empty cell (csv keeps the space; the reader strips it)


def outside_picture(tmp: Path, broken: bool = False) -> Path:
    """A picture beside the image folder, not in it."""
    path = tmp / "elsewhere" / "outside.jpg"
    if broken:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a picture", encoding="utf-8")
        return path
    return pf.tiny_image(path, 5)


def dot_dot(picture: Path, tmp: Path) -> str:
    outside_picture(tmp)
    return "../elsewhere/outside.jpg"


def absolute(picture: Path, tmp: Path) -> str:
    return str(outside_picture(tmp))


def link_out(picture: Path, tmp: Path) -> None:
    picture.unlink()
    picture.symlink_to(outside_picture(tmp))


def folder_link_out(picture: Path, tmp: Path) -> str:
    outside_picture(tmp)
    (picture.parent / "more").symlink_to(tmp / "elsewhere", target_is_directory=True)
    return "more/outside.jpg"


def allowed_but_broken(picture: Path, tmp: Path) -> str:
    return str(outside_picture(tmp, broken=True))


def pattern_suite(tmp: Path, pattern: str) -> Path:
    """Pictures named by id through image_pattern (no image column)."""
    opts = picture_options(tmp)
    opts["columns"] = {k: v for k, v in opts["columns"].items() if k != "image"}
    return table_suite(tmp, images="images", image_pattern=pattern, columns=opts["columns"])


# ---- the catalogue ------------------------------------------------------------------------------

SUITE_FILES = [  # suite files (bench validate)
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
]

RUN_ARGUMENTS = [  # bench run: CLI arguments (click rejects them before anything loads)
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
]

DATASETS = [  # bench run: dataset problems found by the preflight, before Ray starts
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
    Case("run: a labelled pair names an id missing from its table",
         lambda t: ["run", pair_suite(t, spoil=lambda text: text.replace("9,1,0", "9,77,0"))],
         ["test.csv", "line 7", "rtable_id 77 is not an id of tableB.csv", "fix:"]),
    Case("run: pair-labelled dataset under another task", lambda t: ["run", pair_suite(t, task="classification")],
         ["suite.yaml", "trial.task", "holds labelled pairs", "fix: set task: pairs"]),
    Case("run: a pair listed again with the other label",
         lambda t: ["run", pair_suite(t, spoil=lambda text: text + "7,7,0\n")],
         ["test.csv", "line 2", "line 10", "conflicting_pairs"]),
    Case("run: the test pair file holds a header and no pair",
         lambda t: ["run", pair_suite(t, spoil=lambda text: text.splitlines()[0] + "\n")],
         ["test.csv", "the pair file is empty"]),
]

LEADERBOARD = [  # bench leaderboard
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
]

DATA_INSPECT = [  # bench data inspect
    Case("data inspect: unknown dataset", lambda t: ["data", "inspect", "tabel", "--option", "path=x.csv"],
         ["DATASET", "unknown dataset plugin 'tabel'", "did you mean 'table'"]),
    Case("data inspect: --options-json not JSON",
         lambda t: ["data", "inspect", "table", "--options-json", "{path: x.csv"],
         ["--options-json", "not valid JSON", "fix: write an object"]),
    Case("data inspect: option without a value", lambda t: ["data", "inspect", "table", "--option", "path"],
         ["--option", "'path' is not key=value", "fix: write --option path=items.csv"]),
]

CHECK_ARGUMENTS = [  # bench check / bench baseline
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
    Case("check: --alpha of 1", lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--alpha", "1"],
         ["--alpha", "1.0 is not in the range 0<x<1"], usage=True),
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
         ["--tolerance", "'accuracy' is not METRIC=ABS", "fix: write e.g. --tolerance accuracy=0.02"]),
    Case("baseline: --from-run of another suite",
         lambda t: ["baseline", CI_SUITE, "--out", t / "b.json", "--from-run", run_folder(t)],
         ["run", "--from-run", "no trials of suite 'fusion_small'", "fix: pass a run folder of this suite"]),
]

PLUGINS = [  # bench plugins
    Case("plugins: misspelled flag", lambda t: ["plugins", "--jsn"], ["No such option '--jsn'", "Did you mean '--json'"],
         usage=True),
]

NAMES = [  # names that would escape --out or collide with row columns
    Case("suite name '..'", lambda t: ["validate", named(t, "..")],
         ["suite.yaml", "name", "'..' cannot start with '.'", "it becomes the folder --out/.."]),
    Case("suite name '.'", lambda t: ["validate", named(t, ".")], ["suite.yaml", "name", "'.' cannot start with '.'"]),
    Case("suite name hidden ('.x')", lambda t: ["validate", named(t, ".x")], ["name", "'.x' cannot start with '.'"]),
    Case("suite name with a slash", lambda t: ["validate", named(t, "a/b")], ["name", "should match pattern"]),
    Case("suite name absolute", lambda t: ["validate", named(t, "/tmp/x")], ["name", "should match pattern"]),
    Case("suite name empty", lambda t: ["validate", named(t, "")], ["name", "should match pattern"]),
    Case("suite name with NUL", lambda t: ["validate", named(t, "a\x00b")], ["name", "should match pattern"]),
    Case("suite name not text", lambda t: ["validate", named(t, 5)], ["name", "valid string"]),
    Case("suite name 300 characters", lambda t: ["validate", named(t, "x" * 300)], ["name", "at most 100 characters"]),
    Case("axis name with a slash", lambda t: ["validate", axis(t, "a/b")],
         ["suite.yaml", "matrix.a/b", "the axis name 'a/b' cannot be used", "path separator", "fix: rename the axis"]),
    Case("axis name '..'", lambda t: ["validate", axis(t, "..")], ["matrix...", "'..' names a parent or current folder"]),
    Case("axis name absolute", lambda t: ["validate", axis(t, "/etc/x")], ["'/etc/x' cannot be used", "path separator"]),
    Case("axis name empty", lambda t: ["validate", axis(t, "")], ["the axis name '' cannot be used", "it is empty"]),
    Case("axis name with NUL", lambda t: ["validate", axis(t, "a\x00b")], ["cannot be used", "NUL character"]),
    Case("axis name with a backslash", lambda t: ["validate", axis(t, "a\\b")], ["cannot be used", "path separator"]),
    Case("axis name with an empty dotted part", lambda t: ["validate", axis(t, "stages..epochs")],
         ["matrix.stages..epochs", "a dotted path has an empty part"]),
    Case("axis name padded with spaces", lambda t: ["validate", axis(t, " fusion")], ["starts or ends with white space"]),
    *[Case(f"axis name '{col}' collides with a row column", (lambda c: lambda t: ["validate", axis(t, c)])(col),
           [f"matrix.{col}", f"'{col}' is also a column of every trial row", "fix: rename the axis"])
      for col in ("trial_key", "status", "error", "config", "accuracy", "macro_f1", "ndcg@10", "dev_accuracy",
                  "wall_s", "peak_mem_mb", "git_commit", "v_torch", "loss_train", "n_test", "top5_accuracy",
                  "done", "training_iteration")],
    Case("named axis called 'seed' hides the seed column",
         lambda t: ["validate", suite(t, matrix={"seed": {"a": {"seed": 1}, "b": {"seed": 2}}})],
         ["matrix.seed", "'seed' is also a column of every trial row"]),
    Case("search parameter named 'status'",
         lambda t: ["validate", space(t, "status", {"choice": [1, 2]})],
         ["search.space.status", "'status' is also a column of every trial row"]),
    Case("search parameter with '..'", lambda t: ["validate", space(t, "../x", {"choice": [1, 2]})],
         ["search.space.../x", "path separator"]),
    Case("the same name as axis and search parameter",
         lambda t: ["validate", suite(t, matrix={"stages.0.batch_size": [8]},
                                      search={"space": {"stages.0.batch_size": {"grid": [16]}}})],
         ["search.space.stages.0.batch_size", "both a matrix axis and a search parameter", "fix: keep it in one"]),
    Case("run: suite name '..' (nothing written)", lambda t: ["run", named(t, "..")],
         ["name", "'..' cannot start with '.'"]),
]

RESOURCES = [  # impossible or unreachable resources: an error within seconds, never a silent wait
    Case("run: more CPUs per trial than the machine has",
         lambda t: ["run", suite(t, resources={"cpu": 4000})],
         ["suite.yaml", "resources.cpu", "each trial needs 4000 CPUs but this machine has", "Tune would wait forever",
          "fix: set resources.cpu to at most"]),
    Case("run: a GPU per trial on a cluster without one",
         lambda t: ["run", suite(t, resources={"gpu": 1})],
         ["suite.yaml", "resources.gpu", "each trial needs 1 GPU but the Ray cluster has 0", "fix: set resources.gpu: 0"],
         fresh=True, heavy=True),
    Case("run: --address where nobody listens",
         lambda t: ["run", suite(t), "--address", f"127.0.0.1:{closed_port()}"],
         ["--address", "nobody answers at 127.0.0.1:", "fix: start the cluster"]),
    Case("run: --address ray:// where nobody listens",
         lambda t: ["run", suite(t), "--address", f"ray://127.0.0.1:{closed_port()}"],
         ["--address", "nobody answers at 127.0.0.1:"]),
    Case("run: --address without a port", lambda t: ["run", suite(t), "--address", "somehost"],
         ["--address", "'somehost' is not HOST:PORT, ray://HOST:PORT or auto", "fix: write e.g. --address"]),
    Case("run: --address with an unknown host", lambda t: ["run", suite(t), "--address", "no-such-host.invalid:6379"],
         ["--address", "nobody answers at no-such-host.invalid:6379"]),
    Case("run: --address that answers but is not Ray",
         lambda t: ["run", suite(t), "--address", f"127.0.0.1:{silent_port()}"],
         ["--address", "something answers at 127.0.0.1:", "but it is not a Ray cluster"], heavy=True),
]

FOLDERS = [  # results folders that cannot be written: refused before any training
    Case("run: --out inside a file", lambda t: ["run", suite(t), "--out", text(t, "f.txt", "x") / "sub"],
         ["--out", "f.txt is a file, so", "cannot be a folder", "fix: pass a folder path for --out"]),
    Case("run: --out where nothing may be written", lambda t: ["run", suite(t), "--out", "/sys/mic-bench-results"],
         ["/sys/mic-bench-results: --out", "cannot write there", "fix: pass a folder you can write to"]),
    Case("run: --run-dir inside a file", lambda t: ["run", suite(t), "--run-dir", text(t, "f.txt", "x") / "run"],
         ["--run-dir", "f.txt is a file", "fix: pass a folder path for --run-dir"]),
    Case("run: --run-dir where nothing may be written", lambda t: ["run", suite(t), "--run-dir", "/sys/mic-bench-run"],
         ["--run-dir", "cannot write there"]),
    Case("baseline: --run-dir inside a file",
         lambda t: ["baseline", CI_SUITE, "--out", t / "b.json", "--run-dir", text(t, "f.txt", "x") / "run"],
         ["--run-dir", "f.txt is a file"]),
    Case("cache clear: a folder that is not a cache",
         lambda t: ["cache", "clear", "--yes", "--cache-dir", text(t, "keep.txt", "precious").parent],
         ["--cache-dir", "not a mic-bench cache folder", "nothing was deleted", "fix: pass the cache folder itself"]),
]

VALUES = [  # input that would cost unbounded memory or time, or train on nonsense
    Case("YAML alias bomb (billion laughs)", lambda t: ["validate", yaml_suite(t, alias_bomb())],
         ["suite.yaml", "anchors and aliases expand to more than 100000 values", "alias bomb"]),
    Case("YAML alias bomb in bench run", lambda t: ["run", yaml_suite(t, alias_bomb())],
         ["anchors and aliases expand to more than 100000 values"]),
    Case("YAML recursive alias", lambda t: ["validate", yaml_suite(t, "loop: &x [1, *x]\n")],
         ["suite.yaml", "an alias refers to the node that contains it", "fix: remove the self-referring alias"]),
    Case("YAML nested 5000 deep", lambda t: ["validate", text(t, "deep.yaml", "[" * 5000 + "]" * 5000)],
         ["deep.yaml", "the YAML is nested too deeply"]),
    Case("suite file over 1 MiB", lambda t: ["validate", text(t, "big.yaml", "# " + "x" * (1 << 20) + "\nname: x\n")],
         ["big.yaml", "at most 1048576", "fix: a suite is a short YAML file"]),
    Case("epochs: .inf", lambda t: ["validate", stage(t, epochs=float("inf"))],
         ["trial.stages[0].epochs", "finite number"]),
    Case("epochs: .nan", lambda t: ["validate", stage(t, epochs=float("nan"))], ["trial.stages[0].epochs", "finite number"]),
    Case("epochs: 1e9", lambda t: ["validate", stage(t, epochs=1e9)],
         ["trial.stages[0].epochs", "less than or equal to 10000"]),
    Case("epochs: 0", lambda t: ["validate", stage(t, epochs=0)], ["trial.stages[0].epochs", "greater than 0"]),
    Case("batch_size: 1e9", lambda t: ["validate", stage(t, batch_size=10**9)],
         ["trial.stages[0].batch_size", "less than or equal to 65536"]),
    Case("learning rate .nan", lambda t: ["validate", stage(t, optimizer={"lr": float("nan")})],
         ["trial.stages[0].optimizer.lr", "finite number"]),
    Case("objective weight .inf",
         lambda t: ["validate", stage(t, objectives=[{"name": "cross_entropy", "weight": float("inf")}])],
         ["trial.stages[0].objectives[0].weight", "finite number"]),
    Case("seed: -1", lambda t: ["validate", suite(t, tiny_trial(seed=-1))], ["trial.seed", "greater than or equal to 0"]),
    Case("seed beyond 32 bits", lambda t: ["validate", suite(t, matrix={"seed": [2**40]})],
         ["trial.seed", "less than or equal to 4294967295", "(in the trial seed=1099511627776)"]),
    Case("split seed -5", lambda t: ["validate", suite(t, tiny_trial(splits={"seed": -5}))],
         ["trial.splits.seed", "greater than or equal to 0"]),
    Case("dataloader_workers: -1", lambda t: ["validate", suite(t, tiny_trial(dataloader_workers=-1))],
         ["trial.dataloader_workers", "greater than or equal to 0"]),
    Case("finetune_fraction .nan", lambda t: ["validate", suite(t, tiny_trial(finetune_fraction=float("nan")))],
         ["trial.finetune_fraction", "finite number"]),
    Case("max_trial_minutes .inf", lambda t: ["validate", suite(t, tiny_trial(max_trial_minutes=float("inf")))],
         ["trial.max_trial_minutes", "finite number"]),
    Case("eval.k 0", lambda t: ["validate", suite(t, tiny_trial(eval={"k": 0}))], ["trial.eval.k", "greater than or equal to 1"]),
    Case("resources.cpu .inf", lambda t: ["validate", suite(t, resources={"cpu": float("inf")})],
         ["resources.cpu", "finite number"]),
    Case("resources.gpu -1", lambda t: ["validate", suite(t, resources={"gpu": -1})],
         ["resources.gpu", "greater than or equal to 0"]),
    Case("reference value .nan", lambda t: ["validate", suite(t, reference={"late": {"accuracy": float("nan")}})],
         ["reference.late.accuracy", "finite number"]),
    Case("loguniform [0, 1]", lambda t: ["validate", space(t, "stages.0.optimizer.lr", {"loguniform": [0, 1]})],
         ["search.space.stages.0.optimizer.lr.loguniform", "loguniform needs low > 0", "fix: write [low, high] with 0 < low < high"]),
    Case("loguniform low >= high",
         lambda t: ["validate", space(t, "stages.0.optimizer.lr", {"loguniform": [1e-2, 1e-5]})],
         ["lr.loguniform", "loguniform needs low < high"]),
    Case("uniform low == high", lambda t: ["validate", space(t, "finetune_fraction", {"uniform": [0.5, 0.5]})],
         ["finetune_fraction.uniform", "uniform needs low < high"]),
    Case("uniform with one bound", lambda t: ["validate", space(t, "finetune_fraction", {"uniform": [0.5]})],
         ["uniform needs two bounds [low, high], got 1 values"]),
    Case("uniform bound .inf", lambda t: ["validate", space(t, "finetune_fraction", {"uniform": [0, float("inf")]})],
         ["uniform bounds must be finite numbers"]),
    Case("uniform bound text", lambda t: ["validate", space(t, "finetune_fraction", {"uniform": ["a", 1]})],
         ["uniform bounds must be finite numbers"]),
    Case("randint with fractions", lambda t: ["validate", space(t, "stages.0.batch_size", {"randint": [2.5, 8]})],
         ["randint bounds must be whole numbers", "fix: write [low, high] with whole numbers"]),
    Case("choice of nothing", lambda t: ["validate", space(t, "stages.0.batch_size", {"choice": []})],
         ["stages.0.batch_size.choice", "choice needs at least one value"]),
    Case("two distributions for one parameter",
         lambda t: ["validate", space(t, "stages.0.batch_size", {"choice": [8], "grid": [16]})],
         ["search.space.stages.0.batch_size", "needs exactly one distribution, found 2"]),
    Case("no distribution for a parameter", lambda t: ["validate", space(t, "stages.0.batch_size", {})],
         ["needs exactly one distribution, found 0"]),
    Case("search samples 1e9",
         lambda t: ["validate", space(t, "stages.0.batch_size", {"choice": [8, 16]}, samples=10**9)],
         ["search.samples", "less than or equal to 10000"]),
    Case("matrix of 27000 trials",
         lambda t: ["validate", suite(t, matrix={"seed": list(range(30)), "stages.0.batch_size": list(range(2, 32)),
                                                 "finetune_fraction": [i / 30 for i in range(1, 31)]})],
         ["matrix", "the matrix expands to 27000 trials (at most 10000)", "fix: fewer axis values"]),
    Case("dotted axis into a number", lambda t: ["validate", axis(t, "stages.0.epochs.x")],
         ["matrix.stages.0.epochs.x", "'stages.0.epochs' is a number (1), so 'stages.0.epochs.x' cannot go into it",
          "fix: set 'stages.0.epochs' itself"]),
    Case("dotted axis into a text", lambda t: ["validate", axis(t, "fusion.name.x")],
         ["matrix.fusion.name.x", "'fusion.name' is a text ('text_only'), so 'fusion.name.x' cannot go into it"]),
    Case("dotted axis with a negative index", lambda t: ["validate", axis(t, "stages.-1.epochs", (1,))],
         ["matrix.stages.-1.epochs", "'-1' is not an index of the list at 'stages'"]),
    Case("run: image_pattern with two fields", lambda t: ["run", table_suite(t, images=str(t), image_pattern="{}/{}.jpg")],
         ["image_pattern", "has 2 fields", "it takes exactly one {} for the id"]),
    Case("run: image_pattern with a named field", lambda t: ["run", table_suite(t, images=str(t), image_pattern="{id}.jpg")],
         ["image_pattern", "'{id}.jpg' has 1 fields ({id})"]),
    Case("run: image_pattern with an unclosed brace",
         lambda t: ["run", table_suite(t, images=str(t), image_pattern="{.jpg")],
         ["image_pattern", "is not a valid pattern"]),
]

GATES = [  # checks that could pass without comparing anything
    Case("check: baseline with no groups", lambda t: ["check", CI_SUITE, "--baseline",
                                                       edited_baseline(t, lambda b: b.update(groups={}))],
         ["baseline.json: groups", "the baseline has no groups; a check against it would compare nothing and pass",
          "fix: regenerate it"]),
    Case("check: baseline groups without metrics",
         lambda t: ["check", CI_SUITE, "--baseline",
                    edited_baseline(t, lambda b: [g.update(metrics={}) for g in b["groups"].values()])],
         ["the baseline has no metrics; a check against it would compare nothing"]),
    Case("check: baseline with a NaN mean",
         lambda t: ["check", CI_SUITE, "--baseline", edited_baseline(
             t, lambda b: next(iter(b["groups"].values()))["metrics"]["accuracy"].update(mean=float("nan")))],
         ["baseline.json", "not a mic-bench baseline", "mean: Input should be a finite number"]),
    Case("check: baseline with an infinite tolerance",
         lambda t: ["check", CI_SUITE, "--baseline", edited_baseline(
             t, lambda b: b["rule"]["floors"].update(accuracy=float("inf")))],
         ["not a mic-bench baseline", "rule.floors.accuracy: Input should be a finite number"]),
    Case("check: run without any baseline metric",
         lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--from-run", ci_run_without_metrics(t)],
         ["fusion_small.json: groups", "the run has none of the baseline's metrics", "nothing to compare"]),
    Case("baseline: run without any quality metric",
         lambda t: ["baseline", CI_SUITE, "--out", t / "b.json", "--from-run", ci_run_without_metrics(t)],
         ["the run has no test quality metric to record", "a baseline without one would let every check pass"]),
    Case("check: --alpha nan", lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--alpha", "nan"],
         ["--alpha", "'nan' is not a finite number"], usage=True),
    Case("check: --abs-floor inf", lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--abs-floor", "inf"],
         ["--abs-floor", "'inf' is not a finite number"], usage=True),
    Case("check: --tolerance accuracy=inf",
         lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--tolerance", "accuracy=inf"],
         ["--tolerance", "'accuracy=inf' is not METRIC=ABS with ABS a finite number >= 0"]),
    Case("check: --tolerance accuracy=nan",
         lambda t: ["check", CI_SUITE, "--baseline", CI_BASELINE, "--tolerance", "accuracy=nan"],
         ["--tolerance", "is not METRIC=ABS with ABS a finite number >= 0"]),
]


IMAGES = [  # pictures that are not pictures, and image paths that leave the image folder
    Case("run: image file missing", lambda t: ["run", picture_suite(t, removed)],
         ["items.csv", "columns.image (photo)", "1 of 8 images are missing, e.g. item i3 ({tmp}/images/i3.jpg)",
          "fix: add or replace the files", "missing_images: skip", "missing_images: blank",
          "counted in the row as n_image_placeholders"]),
    Case("run: image cell empty", lambda t: ["run", picture_suite(t, no_cell)],
         ["columns.image (photo)", "1 of 8 images are missing, e.g. item i3 (no image given)"]),
    Case("run: zero-byte image", lambda t: ["run", picture_suite(t, empty_file)],
         ["items.csv", "columns.image (photo)", "1 of 8 image files are not usable pictures",
          "item i3 ({tmp}/images/i3.jpg is empty (0 bytes))", "missing_images: skip"]),
    Case("run: truncated JPEG", lambda t: ["run", picture_suite(t, cut_in_half)],
         ["1 of 8 image files are not usable pictures", "i3.jpg cannot be decoded (OSError: Truncated"]),
    Case("run: text file named .jpg", lambda t: ["run", picture_suite(t, text_as_jpg)],
         ["1 of 8 image files are not usable pictures", "i3.jpg is not an image Pillow can read"]),
    Case("run: a folder where an image should be", lambda t: ["run", picture_suite(t, folder_instead)],
         ["i3.jpg is a folder, not a file"]),
    Case("run: symlink to a deleted image", lambda t: ["run", picture_suite(t, dangling_link)],
         ["1 of 8 image files are not usable pictures", "i3.jpg is missing"]),
    Case("run: decompression bomb (1 KB PNG declaring 100000 x 100000)", lambda t: ["run", picture_suite(t, bomb)],
         ["i3.jpg declares a 100000 x 100000 canvas (10000000000 pixels), above the limit of 64000000 pixels",
          "raise MIC_BENCH_MAX_IMAGE_PIXELS if the picture is real"]),
    Case("run: pictures above a lowered MIC_BENCH_MAX_IMAGE_PIXELS", lambda t: ["run", picture_suite(t)],
         ["8 of 8 image files are not usable pictures",
          "declares a 8 x 8 canvas (64 pixels), above the limit of 63 pixels"],
         env={"MIC_BENCH_MAX_IMAGE_PIXELS": "63"}),
    Case("run: MIC_BENCH_MAX_IMAGE_PIXELS not a number", lambda t: ["run", picture_suite(t)],
         ["environment: MIC_BENCH_MAX_IMAGE_PIXELS: 'lots' is not a positive pixel count", "fix: set it to a number"],
         env={"MIC_BENCH_MAX_IMAGE_PIXELS": "lots"}),
    Case("run: missing_images: skip drops every row",
         lambda t: ["run", picture_suite(t, missing_images="skip")],
         ["items.csv", "the table has no rows after dropping rows with missing or unreadable images "
                       "(missing_images: skip)"],
         env={"MIC_BENCH_MAX_IMAGE_PIXELS": "63"}),
    Case("run: missing_images misspelt", lambda t: ["run", picture_suite(t, missing_images="ignore")],
         ["suite.yaml", "trial.dataset.options", "missing_images: Input should be 'error', 'skip' or 'blank'"]),
    Case("run: image path with '..' out of the folder", lambda t: ["run", picture_suite(t, dot_dot)],
         ["items.csv", "columns.image (photo)", "1 image paths lead outside the image folder {tmp}/images",
          "item i3, data row 4: '../elsewhere/outside.jpg' -> {tmp}/elsewhere/outside.jpg",
          "no '..', absolute paths or symlinks out of it", "or set allow_outside_images: true"]),
    Case("run: absolute image path outside the folder", lambda t: ["run", picture_suite(t, absolute)],
         ["1 image paths lead outside the image folder", "'{tmp}/elsewhere/outside.jpg'",
          "allow_outside_images: true"]),
    Case("run: image symlinked to a file outside the folder", lambda t: ["run", picture_suite(t, link_out)],
         ["1 image paths lead outside the image folder", "'i3.jpg' -> {tmp}/elsewhere/outside.jpg",
          "allow_outside_images: true"]),
    Case("run: image under a symlinked folder leading out", lambda t: ["run", picture_suite(t, folder_link_out)],
         ["1 image paths lead outside the image folder", "'more/outside.jpg' -> {tmp}/elsewhere/outside.jpg"]),
    Case("run: image path leaving the table's folder (no images option)",
         lambda t: ["run", picture_suite(t, dot_dot, images=None)],
         ["1 image paths lead outside the image folder {tmp}, e.g. item i3", "'../elsewhere/outside.jpg'"]),
    Case("run: image_pattern leading out of the folder",
         lambda t: ["run", pattern_suite(t, "../{}.jpg")],
         ["items.csv", "image_pattern", "8 image paths lead outside the image folder {tmp}/images",
          "item i0, data row 1: 'i0' -> {tmp}/i0.jpg", "allow_outside_images: true"]),
    Case("run: absolute image_pattern", lambda t: ["run", pattern_suite(t, "/var/{}.jpg")],
         ["image_pattern", "8 image paths lead outside the image folder", "'i0' -> /var/i0.jpg"]),
    Case("run: allow_outside_images: true still checks the picture",
         lambda t: ["run", picture_suite(t, allowed_but_broken, allow_outside_images=True)],
         ["1 of 8 image files are not usable pictures", "outside.jpg is not an image Pillow can read"]),
    Case("run: allow_outside_images not a yes/no", lambda t: ["run", picture_suite(t, allow_outside_images="maybe")],
         ["suite.yaml", "trial.dataset.options", "allow_outside_images: Input should be a valid boolean"]),
    Case("data inspect: truncated JPEG", lambda t: inspect_pictures(t, cut_in_half),
         ["items.csv", "columns.image (photo)", "1 of 8 image files are not usable pictures",
          "cannot be decoded (OSError: Truncated",
          "missing_images: blank"]),
    Case("data inspect: decompression bomb", lambda t: inspect_pictures(t, bomb),
         ["i3.jpg declares a 100000 x 100000 canvas", "MIC_BENCH_MAX_IMAGE_PIXELS"]),
    Case("data inspect: image symlinked out of the folder", lambda t: inspect_pictures(t, link_out),
         ["1 image paths lead outside the image folder", "allow_outside_images: true"]),
    Case("data inspect: missing_images misspelt", lambda t: inspect_pictures(t, missing_images="blanks"),
         ["--option", "missing_images", "'error', 'skip' or 'blank'"]),
]


# ---- suite files and data files that would be read wrongly, or without end -----------------------

def with_fields(tmp: Path, extra: str, *, matrix: str = "matrix:\n  fusion: [text_only, late]\n") -> Path:
    """The tiny suite (a fusion axis) plus raw YAML text (a repeated key, yes/no values ...)."""
    base = yaml.safe_dump({"name": "bad", "trial": tiny_trial()})
    return text(tmp, "suite.yaml", base + matrix + extra)


def repeated_stage_key(tmp: Path) -> Path:
    body = yaml.safe_dump({"name": "bad", "trial": tiny_trial(stages=[])}).replace(
        "stages: []", "stages:\n  - objectives: [cross_entropy]\n    epochs: 1\n    batch_size: 16\n    epochs: 3")
    return text(tmp, "suite.yaml", body)


def include_fan_out(tmp: Path, files: int = 6, times: int = 10) -> Path:
    """f0.yaml includes f1.yaml ten times, f1 includes f2 ten times ...: 10**6 reads from 7 small files."""
    for i in range(files):
        text(tmp, f"f{i}.yaml", "include: [" + ", ".join([f"f{i + 1}.yaml"] * times) + "]\n")
    text(tmp, f"f{files}.yaml", "description: shared\n")
    return text(tmp, "suite.yaml", yaml.safe_dump({"name": "bad", "trial": tiny_trial()}) + "include: f0.yaml\n")


def fifo(path: Path) -> Path:
    """A named pipe nobody writes to: a plain open() for reading would wait forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


def fifo_included(tmp: Path) -> Path:
    fifo(tmp / "base.yaml")
    return text(tmp, "suite.yaml", yaml.safe_dump({"name": "bad", "trial": tiny_trial()}) + "include: base.yaml\n")


def missing_label_spellings(tmp: Path) -> Path:
    """Labels a, NaN, null, NA, N/A, None: one class once the usual spellings of 'missing' are missing."""
    cells = ["a", "NaN", "null", "NA", "N/A", "None", "a", ""]
    pf.write_csv(tmp / "items.csv", ["id", "name", "category"], [[f"i{i}", f"product {i}", c] for i, c in enumerate(cells)])
    return table_suite(tmp)


def nan_id_parquet(tmp: Path) -> Path:
    pl.DataFrame({"id": [1.0, float("nan"), 3.0, 4.0], "name": ["a", "b", "c", "d"],
                  "category": ["x", "y", "x", "y"]}).write_parquet(tmp / "items.parquet")
    return table_suite(tmp, path=str(tmp / "items.parquet"))


def repeated_json_key(tmp: Path) -> Path:
    text(tmp, "items.jsonl", '{"id": "i0", "name": "kettle", "category": "a"}\n'
                             '{"id": "i1", "name": "tea", "category": "b", "category": "a"}\n')
    return table_suite(tmp, path=str(tmp / "items.jsonl"))


def utf16_table(tmp: Path) -> Path:
    text(tmp, "items.csv", "id,name,category\ni0,café,a\ni1,tea,b\n".encode("utf-16"))
    return table_suite(tmp, encoding="latin-1")


def two_name_columns(tmp: Path) -> Path:
    pf.write_csv(tmp / "items.csv", ["id", "name", "category", "name"],
                 [[f"i{i}", f"product {i}", "ab"[i % 2], f"other {i}"] for i in range(8)])
    return table_suite(tmp)


def gzip_bomb_pairs(tmp: Path) -> Path:
    """WDC pair files: a ~70 KB .json.gz inflating to 65 MiB of blanks (1000 times its size)."""
    import gzip

    bomb_file = text(tmp, "train.json.gz", gzip.compress(b" " * (65 << 20), compresslevel=1))
    return suite(tmp, tiny_trial(dataset={"name": "wdc_products", "options": {"train": str(bomb_file),
                                                                              "test": str(bomb_file)}},
                                 task="pairs", encoders={"text": tiny_trial()["encoders"]["text"]},
                                 stages=[{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 8}]))


def fifo_picture(picture: Path, tmp: Path) -> None:
    fifo(picture)


def dev_zero(picture: Path, tmp: Path) -> str:
    return "/dev/zero"


def sparse_3gb(picture: Path, tmp: Path) -> None:
    """A real JPEG followed by a sparse hole: 3 GB on paper, nothing on disk."""
    with open(picture, "ab") as handle:
        handle.truncate(3 << 30)


def float_tiff(values: list) -> Callable[[Path, Path], None]:
    """A 32-bit float TIFF (mode F) written by Pillow, under the picture's .jpg name."""
    def spoil(picture: Path, tmp: Path) -> None:
        import numpy as np
        from PIL import Image

        Image.fromarray(np.array([values], dtype=np.float32)).save(picture, format="TIFF")
    return spoil


def cache_with_entries(tmp: Path) -> Path:
    return text(tmp, "cache.txt", "not a folder")


SUITE_TRAPS = [  # suite files that YAML or pydantic would read silently wrong, or read forever
    Case("validate: `matrix:` twice (the first's axes would vanish)",
         lambda t: ["validate", with_fields(t, "matrix:\n  seed: [0, 1]\n")],
         ["suite.yaml", "the key 'matrix' appears twice in one mapping (lines", "fix: keep one 'matrix:'"]),
    Case("validate: `epochs` twice in one stage", lambda t: ["validate", repeated_stage_key(t)],
         ["suite.yaml", "the key 'epochs' appears twice in one mapping", "second would silently replace the first"]),
    Case("validate: `seed: [yes, no]` (yes/no read as 1 and 0)",
         lambda t: ["validate", with_fields(t, "", matrix="matrix:\n  seed: [yes, no]\n")],
         ["suite.yaml", "trial.seed", "true is a yes/no value where a number is meant"]),
    Case("validate: a yes/no axis value where the trial holds a number",
         lambda t: ["validate", with_fields(t, "", matrix="matrix:\n  stages.0.epochs: [on, 2]\n")],
         ["matrix.stages.0.epochs", "the value true is a yes/no value but 'stages.0.epochs' holds a number",
          "fix: write the numbers"]),
    Case("validate: batch_size: yes",
         lambda t: ["validate", stage(t, batch_size=True)],
         ["trial.stages[0].batch_size", "yes/no value where a number is meant"]),
    Case("validate: learning rate 1.0e38", lambda t: ["validate", stage(t, optimizer={"lr": 1e38})],
         ["trial.stages[0].optimizer.lr", "less than or equal to 10"]),
    Case("validate: include fan-out (each file includes the next ten times)",
         lambda t: ["validate", include_fan_out(t)],
         ["include", "the includes read more than 100 files", "fix: include each shared file once"]),
    Case("validate: the suite file is a FIFO", lambda t: ["validate", fifo(t / "suite.yaml")],
         ["suite.yaml", "the suite file is a FIFO (named pipe), not a regular file", "fix: pass a .yaml file"]),
    Case("validate: an include names a FIFO", lambda t: ["validate", fifo_included(t)],
         ["suite.yaml: include", "base.yaml is a FIFO (named pipe), not a regular file"]),
    Case("validate: leaderboard group_by and sort misspelt",
         lambda t: ["validate", with_fields(t, "leaderboard: {group_by: [fuson], sort: acuracy}\n")],
         ["suite.yaml", "leaderboard.group_by[0]", "'fuson' is not an axis of this suite", "did you mean 'fusion'"]),
    Case("validate: leaderboard sort misspelt",
         lambda t: ["validate", with_fields(t, "leaderboard: {sort: acuracy}\n")],
         ["leaderboard.sort", "'acuracy' is not a metric a trial row holds", "did you mean 'accuracy'"]),
    Case("validate: reference keyed by a group that does not exist",
         lambda t: ["validate", with_fields(t, "reference: {lat: {macro_f1: 0.7}}\n")],
         ["reference.lat", "no group of the leaderboard is called 'lat' (grouped by fusion: text_only, late)",
          "did you mean 'late'"]),
    Case("validate: reference naming a metric that does not exist",
         lambda t: ["validate", with_fields(t, "reference: {late: {macro_fi: 0.7}}\n")],
         ["reference.late.macro_fi", "'macro_fi' is not a metric", "did you mean 'macro_f1'"]),
    Case("validate: dataset file missing (checked without loading)",
         lambda t: ["validate", table_suite(t, path=str(t / "missing.csv"))],
         ["suite.yaml", "trial.dataset.options.path", "file not found", "missing.csv", "fix: check the spelling"]),
    Case("validate: dataset file is a FIFO",
         lambda t: ["validate", table_suite(t, path=str(fifo(t / "pipe.csv")))],
         ["trial.dataset.options.path", "pipe.csv is a FIFO (named pipe), not a regular file"]),
    Case("validate: pair file of wdc_products missing",
         lambda t: ["validate", suite(t, tiny_trial(
             dataset={"name": "wdc_products", "options": {"train": str(text(t, "train.json", "")),
                                                          "test": str(t / "gone.json.gz")}}, task="pairs",
             encoders={"text": tiny_trial()["encoders"]["text"]},
             stages=[{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 8}]))],
         ["trial.dataset.options.test", "file not found", "gone.json.gz"]),
]

DATA_TRAPS = [  # data files read wrongly (a class called NaN), or without end (FIFOs, bombs, /dev/zero)
    Case("run: CSV separator of two characters", lambda t: ["run", table_suite(t, separator=";;")],
         ["suite.yaml", "trial.dataset.options", "separator: String should have at most 1 character"]),
    Case("run: CSV with two `name` columns", lambda t: ["run", two_name_columns(t)],
         ["items.csv", "line 1", "the header names the column 'name' twice (columns 2 and 4)",
          "fix: rename one of the two columns"]),
    Case("run: UTF-16 table read as latin-1", lambda t: ["run", utf16_table(t)],
         ["items.csv", "encoding", "the file looks like UTF-16 text", "not latin-1", "fix: set encoding: utf-16"]),
    Case("run: JSON-lines object with a repeated key", lambda t: ["run", repeated_json_key(t)],
         ["items.jsonl", "line 2", "the key 'category' appears twice in one object"]),
    Case("run: label cells NaN, null, NA, N/A, None (missing, not classes)",
         lambda t: ["run", missing_label_spellings(t)],
         ["items.csv", "category", "has one class only ('a')"]),
    Case("run: NaN in a Parquet id column", lambda t: ["run", nan_id_parquet(t)],
         ["items.parquet", "columns.id (id)", "1 rows have no id (data rows 2)"]),
    Case("run: .json.gz inflating 1000 times its size", lambda t: ["run", gzip_bomb_pairs(t)],
         ["train.json.gz", "the table file inflates to more than 67108864 bytes", "decompression bomb"]),
    Case("run: an image path that is a FIFO", lambda t: ["run", picture_suite(t, fifo_picture)],
         ["items.csv", "1 of 8 image files are not usable pictures",
          "i3.jpg is a FIFO (named pipe), not a regular file)"]),
    Case("data inspect: /dev/zero as an image (allow_outside_images)",
         lambda t: inspect_pictures(t, dev_zero, allow_outside_images=True),
         ["1 of 8 image files are not usable pictures", "/dev/zero is a character device, not a regular file"]),
    Case("run: a 3 GB file named .jpg", lambda t: ["run", picture_suite(t, sparse_3gb)],
         ["i3.jpg is 3221225472 bytes, above the limit of 67108864 bytes per image file",
          "MIC_BENCH_MAX_IMAGE_BYTES"]),
    Case("run: 32-bit float TIFF with a NaN pixel", lambda t: ["run", picture_suite(t, float_tiff([0.0, float("nan")]))],
         ["i3.jpg has 1 pixels that are NaN or infinite (32-bit float pixels, mode F)"]),
    Case("run: 32-bit float TIFF with pixels 0..200", lambda t: ["run", picture_suite(t, float_tiff([0.0, 200.0]))],
         ["i3.jpg has 32-bit float pixels from 0 to 200; only 0..1 has a known meaning"]),
    Case("cache info: --cache-dir is a file", lambda t: ["cache", "info", "--cache-dir", cache_with_entries(t)],
         ["cache.txt", "--cache-dir", "this is a file, not a cache folder"]),
]


# ---- stored results that would mislead: refused, naming the file ------------------------------------

def stale_run(tmp: Path) -> list:
    """A table suite, and a run of it whose finished row was recorded on other data (another fingerprint)."""
    from bench.config.suite import load_suite
    from bench.api.plugins import get_registry

    path = table_suite(tmp)
    key = load_suite(path, get_registry()).trials[0].key
    run = RunDir(tmp / "old" / "bad" / "20260101-000000-000001")
    run.write_row({"trial_key": key, "status": "ok", "error": "", "accuracy": 0.5, "data_fingerprint": "0" * 64})
    run.write_meta({"suite": "bad", "started": "2026-01-01T00:00:00+00:00"})
    return ["run", path, "--resume", "--out", tmp / "old"]


def spoilt_row(tmp: Path, edit: Callable[[RunDir], None]) -> Path:
    """run_folder with one of its row files spoilt by ``edit``, after trials.parquet was merged."""
    folder = run_folder(tmp)
    run = RunDir(folder)
    run.consolidate()
    edit(run)
    return folder


def _copied(run: RunDir) -> None:
    import shutil

    shutil.copy(run.rows_dir / "k1.parquet", run.rows_dir / "k1-copy.parquet")


def _text_metric(run: RunDir) -> None:
    pl.read_parquet(run.rows_dir / "k1.parquet").with_columns(pl.lit("0.6").alias("accuracy")).write_parquet(
        run.rows_dir / "k1.parquet")
    later = (run.path / "trials.parquet").stat().st_mtime_ns + 10**9
    os.utime(run.rows_dir / "k1.parquet", ns=(later, later))


def _no_status(run: RunDir) -> None:
    pl.read_parquet(run.rows_dir / "k1.parquet").drop("status").write_parquet(run.rows_dir / "k1.parquet")
    later = (run.path / "trials.parquet").stat().st_mtime_ns + 10**9
    os.utime(run.rows_dir / "k1.parquet", ns=(later, later))


STORED_RESULTS = [  # rows and runs that would make a leaderboard say something untrue
    Case("run --resume after the data changed", stale_run,
         ["old/bad/20260101-000000-000001: --resume", "the data changed since 1 finished trial(s) of this run",
          "resuming would mix two catalogues", "fix: start a new run (without --resume), or pass --rerun-stale"]),
    Case("leaderboard: a row file copied under a second name", lambda t: ["leaderboard", spoilt_row(t, _copied)],
         ["rows/k1.parquet: trial_key", "two row files hold trial k1: k1-copy.parquet and k1.parquet",
          "fix: keep only k1.parquet"]),
    Case("leaderboard: a metric stored as text", lambda t: ["leaderboard", spoilt_row(t, _text_metric)],
         ["rows/k1.parquet: accuracy", "metric 'accuracy' is stored as String, not as a number",
          "fix: delete that file and run `bench run --resume`"]),
    Case("leaderboard: a row file without a status column", lambda t: ["leaderboard", spoilt_row(t, _no_status)],
         ["rows/k1.parquet", "not a result row: no status column", "fix: delete that file"]),
]

# ---- end of the stored-results block ---------------------------------------------------------------


SECTIONS = {
    "Suite files": SUITE_FILES,
    "Names that escape or collide": NAMES,
    "Absurd values and unbounded input": VALUES,
    "bench run arguments": RUN_ARGUMENTS,
    "Datasets (found before Ray starts)": DATASETS,
    "Images and image paths (found before Ray starts)": IMAGES,
    "Impossible or unreachable resources": RESOURCES,
    "Results folders": FOLDERS,
    "Leaderboards": LEADERBOARD,
    "bench data inspect": DATA_INSPECT,
    "bench check and bench baseline": CHECK_ARGUMENTS,
    "Gates that could pass vacuously": GATES,
    "bench plugins": PLUGINS,
    "Suite files read wrongly or without end": SUITE_TRAPS,
    "Data files read wrongly or without end": DATA_TRAPS,
    "Stored results that would mislead": STORED_RESULTS,
}
CASES = [c for title, cases in SECTIONS.items() for c in cases for c.section in [title]]
CASE_IDS = [c.id for c in CASES]


# ---- running a case -----------------------------------------------------------------------------

@dataclass
class Outcome:
    code: int
    stderr: str
    traceback: str = ""


def invoke(case: Case, tmp: Path, args: list | None = None) -> Outcome:
    args = [str(a) for a in (case.args(tmp) if args is None else args)]
    if args[0] == "run" and "--out" not in args and "--run-dir" not in args:
        args += ["--out", str(tmp / "results")]  # if an input slipped through, nothing lands in the checkout
    if case.fresh:
        proc = run_bench(*args, env=case.env, timeout=300)
        return Outcome(proc.returncode, proc.stderr, proc.stderr if "Traceback" in proc.stderr else "")
    from click.testing import CliRunner

    from bench.cli import cli

    result = CliRunner().invoke(cli, args, obj={}, prog_name="bench", env=case.env)
    trace = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(*result.exc_info))
    return Outcome(result.exit_code, result.stderr, trace)


def user_message(stderr: str, tmp: Path) -> str:
    """What the user reads: the error line(s) and the fix, with the temporary folder as $TMP."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith(("error: ", "Error: "))), None)
    if start is None:
        return stderr.strip()
    message = "\n".join(lines[start:start + 2] if lines[start].startswith("error: ") else lines[start:start + 1])
    message = message.replace(str(tmp.resolve()), "$TMP").replace(str(tmp), "$TMP")
    return message.replace(str(ROOT) + "/", "")


def params():
    return [pytest.param(c, id=c.id, marks=[pytest.mark.heavy] if c.heavy else []) for c in CASES]


@pytest.mark.parametrize("case", params())
def test_bad_input_exits_2_with_a_clear_message(case, tmp_path):
    outcome = invoke(case, tmp_path)
    err = outcome.stderr
    assert not outcome.traceback, outcome.traceback[-3000:]
    assert outcome.code == 2, f"exit {outcome.code}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    if case.usage:
        assert "Usage:" in err and "Error:" in err, err
    else:
        assert "error: " in err and "\n  fix: " in err, err
    for word in case.words:
        word = word.replace("{tmp}", str(tmp_path))
        assert word in err, f"{word!r} not in:\n{err}"
    assert not list(tmp_path.rglob("tune")), "Ray started for an input that should have failed up front"
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("run.json")), \
        "a run folder was made for an input that should have failed up front"


# ---- one case per class, end to end in a fresh folder ------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``; files with their size and modification time."""
    out = {}
    for path in root.rglob("*"):
        info = path.lstat()
        out[str(path.relative_to(root))] = ("dir",) if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return out


def bench_in(cwd: Path, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `bench` in a new process started in ``cwd``."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "plugins"), full_env.get("PYTHONPATH"))
                                             if p)
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


END_TO_END = {
    "names": (lambda t: ["run", named(t, ".."), "--out", t / "results"], "'..' cannot start with '.'"),
    "values": (lambda t: ["run", yaml_suite(t, alias_bomb()), "--out", t / "results"],
               "anchors and aliases expand to more than 100000 values"),
    "resources": (lambda t: ["run", suite(t), "--out", t / "results", "--address", f"127.0.0.1:{closed_port()}"],
                  "nobody answers at 127.0.0.1:"),
    "folders": (lambda t: ["run", suite(t), "--out", text(t, "f.txt", "x") / "results"], "f.txt is a file"),
    "gates": (lambda t: ["check", CI_SUITE, "--baseline", edited_baseline(t, lambda b: b.update(groups={}))],
              "the baseline has no groups"),
}


@pytest.mark.parametrize("kind", list(END_TO_END))
def test_each_class_end_to_end_exits_2_within_seconds_and_writes_nothing(kind, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    build, message = END_TO_END[kind]
    args = build(work)
    before, around = snapshot(tmp_path), sorted(p.name for p in tmp_path.parent.iterdir())
    start = time.monotonic()
    proc = bench_in(work, *args, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "\n  fix: " in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before, "files were written for an input that failed"
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == around, "something was written beside the test folder"
    assert elapsed < 90, f"took {elapsed:.0f} s"


IMAGE_END_TO_END = {  # what each image class leaves in the cache: a bad picture's verdict, or nothing
    "bad picture": (lambda t: ["run", picture_suite(t, text_as_jpg), "--out", t / "results"],
                    "i3.jpg is not an image Pillow can read", {MANIFEST_NAME}),
    "escaping path": (lambda t: ["run", picture_suite(t, link_out), "--out", t / "results"],
                      "1 image paths lead outside the image folder", set()),
}


@pytest.mark.parametrize("kind", list(IMAGE_END_TO_END))
def test_bad_images_end_to_end_exit_2_and_write_nothing_but_the_image_manifest(kind, tmp_path):
    """A fresh `bench run` over a table with a bad picture, or a path out of its image folder:
    exit 2 within seconds, the message and its fix, no file in the working folder or beside it.
    The cache may gain only the image manifest (the digest and verdict of the files it read); a
    path leading out is refused before any picture is read."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    build, message, cached = IMAGE_END_TO_END[kind]
    args = build(work)
    before, around = snapshot(work), sorted(p.name for p in tmp_path.parent.iterdir())
    start = time.monotonic()
    proc = bench_in(work, *args, env={"MIC_BENCH_CACHE": str(cache)}, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "\n  fix: " in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    fix = "allow_outside_images: true" if kind == "escaping path" else "missing_images: skip"
    assert fix in proc.stderr, proc.stderr
    assert snapshot(work) == before, "files were written for an input that failed"
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == around, "something was written beside the test folder"
    assert set(snapshot(cache)) - {CACHE_MARKER} == cached
    assert elapsed < 90, f"took {elapsed:.0f} s"


# ---- the document ------------------------------------------------------------------------------

def doc_rows(text: str) -> dict[str, str]:
    """Case id -> message, from the catalogue tables of docs/bad-inputs.md."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0].isdigit():
            rows[unescape(cells[1])] = unescape(cells[3])
    return rows


def escape(value: str) -> str:
    value = "".join(c if c == "\n" or c.isprintable() else repr(c)[1:-1] for c in value)  # NUL, tab: as \x00, \t
    return value.replace("|", "\\|").replace("\n", "<br>")


def unescape(value: str) -> str:
    return value.replace("<br>", "\n").replace("\\|", "|").strip("`")


def test_the_doc_lists_every_case_with_its_message():
    rows = doc_rows(DOC.read_text(encoding="utf-8"))
    assert sorted(rows) == sorted(CASE_IDS), "docs/bad-inputs.md and CASES differ: run " \
                                             "`python tests/test_bad_inputs.py --write-doc`"
    for case in CASES:
        for word in case.words:
            word = word.replace("{tmp}", "$TMP")
            assert word in rows[case.id], f"{case.id}: {word!r} not in the documented message {rows[case.id]!r}"


def test_every_documented_fault_names_a_test_that_exists():
    faults = re.findall(r"^\| F\d+ \|.*`(test_\w+\.py)::(test_\w+)` \|$", DOC.read_text(encoding="utf-8"), flags=re.M)
    assert len(faults) >= 7
    for file, name in faults:
        assert f"def {name}(" in (ROOT / "tests" / file).read_text(encoding="utf-8"), f"{file}::{name} is gone"


def test_the_catalogue_has_at_least_80_entries():
    assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"
    faults = re.findall(r"^\| F\d+ ", DOC.read_text(encoding="utf-8"), flags=re.M)
    assert len(CASES) + len(faults) >= 80


def write_doc() -> None:
    import tempfile

    intro = DOC.read_text(encoding="utf-8").split("<!-- cases -->")[0] if DOC.exists() else "# Bad inputs\n\n"
    tail = DOC.read_text(encoding="utf-8").split("<!-- end of cases -->")[1] if DOC.exists() else "\n"
    out = [intro.rstrip() + "\n", "<!-- cases -->"]
    n = 0
    for title, cases in SECTIONS.items():
        out += ["", f"### {title}", "", "| # | input | command | message |", "|---|---|---|---|"]
        for case in cases:
            n += 1
            with tempfile.TemporaryDirectory() as tmp_name:
                tmp = Path(tmp_name)
                args = [str(a) for a in case.args(tmp)]
                outcome = invoke(case, tmp, args)
                command = "bench " + " ".join(
                    a.replace(str(tmp), "$TMP").replace(str(ROOT) + "/", "") if len(a) < 80 else "…" for a in args)
                message = user_message(outcome.stderr, tmp)
                command, message = (re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", x) for x in (command, message))
            mark = " (slow)" if case.heavy else ""
            out.append(f"| {n} | {escape(case.id)} | `{escape(command)}`{mark} | {escape(message)} |")
            print(n, case.id, outcome.code, file=sys.stderr)
    out += ["", "<!-- end of cases -->"]
    DOC.write_text("\n".join(out) + tail, encoding="utf-8")


if __name__ == "__main__":
    if "--write-doc" in sys.argv:
        write_doc()
