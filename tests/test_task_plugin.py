"""A task plugin from outside the core: the example package examples/mic-bench-hierarchy, installed for
real, runs a suite beside the built-in classification task; its declared columns recompute from the
stored predictions, its figures match scikit-learn, and a catalogue without a tree is refused."""
from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
import yaml

from bench.errors import BenchError
from conftest import invoke_bench, run_bench

TASK = "hierarchical_classification"
# A 3-level tree with one 2-level leaf (Garden > Hoses); siblings share their parent's words, so
# mistakes fall mostly inside a parent and the levels score differently.
LEAVES = {
    "Home > Kitchen > Knives": "blade steel", "Home > Kitchen > Pans": "skillet nonstick",
    "Home > Bath > Towels": "cotton absorbent", "Home > Bath > Mirrors": "glass vanity",
    "Garden > Tools > Shovels": "spade dig", "Garden > Tools > Rakes": "tines leaves",
    "Garden > Hoses": "hose nozzle", "Toys > Puzzles > Jigsaw": "pieces picture",
}
NOISE = "new sale best premium classic set pack value gift deluxe".split()


def _write_catalogue(path, per_leaf: int = 12, seed: int = 0) -> None:
    """A CSV of the shape a shop exports: id, title, category path, split."""
    rng = np.random.default_rng(seed)
    rows = []
    for leaf, words in LEAVES.items():
        parts = leaf.split(" > ")
        for i in range(per_leaf):
            mine = rng.choice(words.split(), size=1).tolist() if rng.random() < 0.7 else []
            title = " ".join([*(p.lower() for p in parts[:-1]), *mine, *rng.choice(NOISE, size=3).tolist()])
            split = "train" if i < per_leaf // 2 else ("dev" if i < per_leaf * 3 // 4 else "test")
            rows.append({"id": f"{parts[-1].lower()}-{i}", "title": title, "category": leaf, "split": split})
    pl.DataFrame(rows).write_csv(path)


def _suite(tmp_path, csv, name: str = "hierarchy") -> dict:
    return {"name": name,
            "trial": {"dataset": {"name": "table", "options": {"path": str(csv), "columns": {
                          "id": "id", "title": "title", "label": "category", "split": "split"}}},
                      "encoders": {"text": {"name": "tfidf_text"}},
                      "fusion": "text_only",
                      "stages": [{"objectives": ["cross_entropy"], "epochs": 4, "batch_size": 16,
                                  "optimizer": {"lr": 0.02}}]},
            "matrix": {"task": ["classification", TASK]}}


@pytest.fixture(scope="module")
def hierarchy_package(tmp_path_factory):
    """The example package pip-installed into a temporary folder; afterwards its module and the metrics
    it declared are taken back out, so later tests see the registry as the core declares it."""
    from bench.metrics import registry as metric_registry
    from plugin_packages import install, uninstall

    declared = list(metric_registry.METRICS)
    from bench.api.plugins import get_registry

    packages = install("mic-bench-hierarchy", root=tmp_path_factory.mktemp("plugins"))
    get_registry()  # the plugin loads in this process too: its metrics join the registry
    yield packages
    uninstall(packages)
    for name in [m for m in sys.modules if m.split(".")[0] == "mic_bench_hierarchy"]:
        del sys.modules[name]
    metric_registry.METRICS[:] = declared
    metric_registry.lookup.cache_clear()


# ---------------------------------------------------------------------------------- the recomputation


def _prefixes(path: list[str]) -> set[tuple[str, ...]]:
    return {tuple(path[:d]) for d in range(1, len(path) + 1)}


def _expected(true: list[list[str]], pred: list[list[str]], levels: int) -> dict[str, float]:
    """The declared definitions, written again with scikit-learn and sets of prefixes."""
    from sklearn.metrics import accuracy_score, f1_score

    out = {}
    for n in range(1, levels + 1):
        t = [" > ".join(p[:n]) for p in true]
        q = [" > ".join(p[:n]) for p in pred]
        out[f"level{n}_accuracy"] = accuracy_score(t, q)
        out[f"level{n}_macro_f1"] = f1_score(t, q, average="macro", labels=sorted(set(t)), zero_division=0)
    shared = sum(len(_prefixes(t) & _prefixes(p)) for t, p in zip(true, pred))
    precision = shared / sum(len(_prefixes(p)) for p in pred)
    recall = shared / sum(len(_prefixes(t)) for t in true)
    out.update(hier_precision=precision, hier_recall=recall,
               hier_f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return out


def _check_rows_recompute(rows: pl.DataFrame, predictions: pl.DataFrame) -> dict:
    """The hierarchical row's declared columns equal what its stored predictions give; returns that row."""
    from bench.metrics.registry import lookup

    assert set(rows["status"]) == {"ok"}, rows["error"].to_list()
    row = rows.filter(pl.col("task") == TASK).row(0, named=True)
    flat = rows.filter(pl.col("task") == "classification").row(0, named=True)
    names = [f"level{n}_{m}" for n in (1, 2, 3) for m in ("accuracy", "macro_f1")] + \
        ["hier_precision", "hier_recall", "hier_f1"]
    for name in names:
        found = lookup(name)
        assert found is not None and found.family == "hierarchy" and found.definition, name
        assert flat.get(name) is None  # the built-in task does not score paths
    assert row.get("level4_accuracy") is None  # levels: 3 by default
    stored = predictions.filter(pl.col("trial_key") == row["trial_key"])
    true = [label.split(" > ") for label in stored["true_label"]]
    pred = [label.split(" > ") for label in stored["pred_label"]]
    assert stored["true_path"].to_list() == true and stored["pred_path"].to_list() == pred
    expected = _expected(true, pred, levels=3)
    assert {k: row[k] for k in names} == pytest.approx(expected, abs=1e-12)
    # the deepest level is the leaf itself, so it is the flat accuracy; cut paths can only agree more
    assert row["level3_accuracy"] == pytest.approx(row["accuracy"])
    assert row["level1_accuracy"] >= row["level2_accuracy"] >= row["level3_accuracy"]
    assert row["selection_metric"] == "dev_hier_f1" and 0 <= row["dev_hier_f1"] <= 1
    assert flat["selection_metric"] == "dev_macro_f1"
    return row


# ----------------------------------------------------------------------------------- fast, in-process


def test_a_suite_with_the_outside_task_beside_classification(hierarchy_package, tmp_path, write_suite):
    """The suite's two trials in this process (no Ray: a worker started before the package was
    installed could not import it), written and rendered as a run writes and renders them."""
    from bench.config.suite import load_suite
    from bench.api.plugins import get_registry
    from bench.reporting.leaderboard import render_markdown, spec_from_suite, task_selection_metric
    from bench.reporting.results import new_run_dir
    from bench.reporting.write import load_predictions
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    csv = tmp_path / "products.csv"
    _write_catalogue(csv)
    registry = get_registry()
    assert registry.get("task", TASK).distribution == "mic-bench-hierarchy"
    loaded = load_suite(write_suite(_suite(tmp_path, csv)), registry)
    assert sorted(t.axes["task"] for t in loaded.trials) == ["classification", TASK]
    run = new_run_dir(tmp_path / "results", loaded.suite.name)
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path / "cache"))
    for spec in loaded.trials:
        outcome = run_trial(spec, ctx)
        run.write_row(outcome.row, outcome.predictions, outcome.curve)
    rows, predictions = run.consolidate(), load_predictions(run.path)
    row = _check_rows_recompute(rows, predictions)

    assert task_selection_metric({"task": TASK}) == "dev_hier_f1"  # what a search over this task selects by
    board = render_markdown(rows, spec_from_suite(loaded.suite), predictions)
    assert TASK in board and "hier_f1" in board

    listed = invoke_bench("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    tasks = {p["name"]: p for p in json.loads(listed.stdout)["plugins"] if p["kind"] == "task"}
    assert {"classification", "retrieval", "pairs", TASK} <= set(tasks)
    assert tasks[TASK]["distribution"] == "mic-bench-hierarchy"


def test_a_catalogue_without_a_tree_is_refused_by_name(hierarchy_package, tmp_path):
    from bench.config.schema import TrialConfig
    from bench.api.plugins import get_registry
    from bench.trial.context import TrialContext
    from bench.trial.session import open_trial

    csv = tmp_path / "flat.csv"
    _write_catalogue(csv)
    flat = pl.read_csv(csv).with_columns(pl.col("category").str.split(" > ").list.last())
    flat.write_csv(csv)
    trial = _suite(tmp_path, csv)["trial"] | {"task": TASK}
    with pytest.raises(BenchError) as err:
        open_trial(TrialConfig.model_validate(trial), TrialContext(registry=get_registry()))
    assert err.value.field == "label" and err.value.file == str(csv)
    assert "one-level path" in err.value.message and "trial.task.options.separator" in err.value.fix


def test_labels_cut_by_the_reader_keep_their_place_in_the_tree(hierarchy_package, tmp_path):
    """label_level: 2 cuts the labels; the task finds each label's path in Catalog.label_paths at the
    label's own depth, not the item's whole path, and a label split on the separator otherwise."""
    from bench.data.catalog import Catalog
    from bench.api.interfaces import BuildContext
    from bench.api.plugins import get_registry
    from mic_bench_hierarchy import label_tree

    csv = tmp_path / "products.csv"
    _write_catalogue(csv)
    catalog = get_registry().create("dataset", "table", {"path": str(csv), "label_level": 2, "columns": {
        "id": "id", "title": "title", "label": "category", "split": "split"}}, BuildContext(), field="trial.dataset")
    assert catalog.label_paths is not None
    tree = label_tree(catalog, " > ")
    assert tree["Home > Kitchen"] == ("Home", "Kitchen") and tree["Garden > Hoses"] == ("Garden", "Hoses")
    bare = Catalog(name="bare", items=pl.DataFrame({"item_id": ["1", "2"], "title": ["a", "b"],
                                                    "label": ["Home/Kitchen/Knives", "Toys"]}))
    assert label_tree(bare, "/") == {"Home/Kitchen/Knives": ("Home", "Kitchen", "Knives"), "Toys": ("Toys",)}


def test_scores_match_scikit_learn_on_random_paths(hierarchy_package):
    from mic_bench_hierarchy.metrics import hierarchical_prf, level_metrics

    rng = np.random.default_rng(3)
    tree = [leaf.split(" > ") for leaf in LEAVES] + [["Home"], ["Toys", "Puzzles"]]
    true = [tree[i] for i in rng.integers(0, len(tree), 200)]
    pred = [tree[i] for i in rng.integers(0, len(tree), 200)]
    got = {}
    for n in (1, 2, 3, 4):
        got.update(level_metrics([tuple(p) for p in true], [tuple(p) for p in pred], n))
    got.update(hierarchical_prf([tuple(p) for p in true], [tuple(p) for p in pred]))
    assert got == pytest.approx(_expected(true, pred, levels=4), abs=1e-12)
    # Kiritchenko et al.'s worked case: true A>B>C, predicted A>B>D: 2 of 3 prefixes each way
    assert hierarchical_prf([("A", "B", "C")], [("A", "B", "D")]) == pytest.approx(
        {"hier_precision": 2 / 3, "hier_recall": 2 / 3, "hier_f1": 2 / 3})


# ------------------------------------------------------------------------------- heavy: a real run


@pytest.mark.heavy
def test_bench_run_under_ray_with_the_installed_task(hierarchy_package, tmp_path):
    """`bench run` in a fresh process: the entry-point scan and the Ray workers find the installed
    package as a user's would; the leaderboard it writes shows the task's columns."""
    from bench.reporting.write import load_predictions

    csv = tmp_path / "products.csv"
    _write_catalogue(csv)
    suite = tmp_path / "hierarchy.yaml"
    suite.write_text(yaml.safe_dump(_suite(tmp_path, csv)), encoding="utf-8")
    proc = run_bench("run", suite, "--out", tmp_path / "results", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "results" / "hierarchy").glob("*/trials.parquet")
    rows = pl.read_parquet(run)
    _check_rows_recompute(rows, load_predictions(run.parent))
    assert json.loads(rows["plugins"][0])["mic-bench-hierarchy"] == "0.1.0"
    board = (run.parent / "leaderboard.md").read_text(encoding="utf-8")
    assert TASK in board and "hier_f1" in board
    listed = run_bench("plugins", "--json")
    assert any(p["kind"] == "task" and p["name"] == TASK for p in json.loads(listed.stdout)["plugins"])
