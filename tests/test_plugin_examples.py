"""The plugin examples of docs/writing-a-plugin.md: the doc shows the files verbatim, and every
example runs in a real trial (registered in-process, as an installed package would be)."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pluggy
import pytest

from bench import hookspecs
from bench.interfaces import BuildContext
from bench.plugins import GuardedHooks
from bench.registry import Registry
from bench.running.runner import RunSummary
from bench.config.suite import load_suite
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import TINY_DATA, TINY_IMAGE, tiny_trial

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-a-plugin.md"
EXAMPLES = {
    "encoder": ROOT / "examples/plugins/word_counts.py",
    "fusion": ROOT / "examples/mic-bench-film/mic_bench_film/__init__.py",
    "objective": ROOT / "examples/plugins/focal_loss.py",
    "dataset": ROOT / "examples/plugins/jsonl_catalog.py",
    "hook": ROOT / "examples/plugins/trial_log.py",
}
BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```\n", re.S)


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_shows_every_example_file_verbatim():
    shown = {m["path"]: m["body"] for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}
    wanted = {str(p.relative_to(ROOT)) for p in EXAMPLES.values()} | {"examples/mic-bench-film/pyproject.toml"}
    assert wanted <= set(shown), f"not shown in the doc: {sorted(wanted - set(shown))}"
    for rel, body in shown.items():
        assert body == (ROOT / rel).read_text(encoding="utf-8"), f"{rel} differs from its copy in {DOC.name}"


@pytest.fixture
def with_examples(registry):
    reg = Registry()
    for spec in registry.all():
        reg.add(spec)
    modules = {kind: _module(path) for kind, path in EXAMPLES.items()}
    for spec in [*modules["encoder"].bench_encoders(), *modules["fusion"].bench_fusions(),
                 *modules["objective"].bench_objectives(), *modules["dataset"].bench_datasets()]:
        reg.add(spec)
    return reg, modules


def _jsonl(reg: Registry, folder: Path) -> Path:
    """The tiny generated catalogue written as JSON lines, image paths relative to the file."""
    catalog = reg.create("dataset", TINY_DATA["name"], TINY_DATA["options"], BuildContext(), field="trial.dataset")
    images = folder / "images"
    images.mkdir()
    path = folder / "products.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for row in catalog.items.iter_rows(named=True):
            (images / f"{row['item_id']}.png").write_bytes(Path(row["image"]).read_bytes())
            out.write(json.dumps({"id": row["item_id"], "title": row["title"], "image": f"images/{row['item_id']}.png",
                                  "label": row["label"]}) + "\n")
        out.write(json.dumps({"id": "untitled", "title": ""}) + "\n")
    return path


def test_every_example_runs_in_one_trial(with_examples, tmp_path, write_suite, capsys):
    reg, modules = with_examples
    data = _jsonl(reg, tmp_path)
    catalog = reg.create("dataset", "jsonl", {"path": str(data)}, BuildContext(), field="trial.dataset")
    assert catalog.notes == {"skipped_untitled": 1} and catalog.has_images and len(catalog.label_names) == 8
    trial = tiny_trial(dataset={"name": "jsonl", "options": {"path": str(data)}},
                       encoders={"text": {"name": "word_counts", "options": {"max_words": 64}}, "image": TINY_IMAGE},
                       fusion="film", stages=[{"objectives": [{"name": "focal", "options": {"gamma": 1.0}}],
                                               "epochs": 2, "batch_size": 16, "optimizer": {"lr": 1e-2}}])
    (spec,) = load_suite(write_suite({"name": "examples", "trial": trial}), reg).trials
    row = run_trial(spec, TrialContext(registry=reg)).row
    assert row["status"] == "ok", row["error"] + row.get("traceback", "")
    assert 0 < row["word_count_vocabulary"] <= 64  # the encoder's fit ran on the train titles
    assert 0.0 <= row["macro_f1"] <= 1.0 and row["loss_train"] > 0

    pm = pluggy.PluginManager("mic_bench")
    pm.add_hookspecs(hookspecs)
    pm.register(modules["hook"])
    hooks = GuardedHooks(pm)
    hooks.bench_trial_finished(result=row)
    hooks.bench_suite_finished(run=RunSummary(tmp_path, "examples", 1, 0, 1, 0))
    err = capsys.readouterr().err
    assert f"trial {spec.key} ok macro_f1={row['macro_f1']:.3f}" in err
    assert f"suite examples: 1 ok, 0 failed -> {tmp_path}" in err


def test_the_dataset_example_reports_bad_lines(with_examples, tmp_path):
    from bench.errors import BenchError

    reg, _ = with_examples
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "title": "a"}\n{"id": 2, title}\n', encoding="utf-8")
    with pytest.raises(BenchError) as err:
        reg.create("dataset", "jsonl", {"path": str(bad)}, BuildContext(), field="trial.dataset")
    assert err.value.file == str(bad) and err.value.field == "line 2"
