"""The plugin examples of docs/writing-a-plugin.md: the doc shows the files verbatim, and every
example runs in a real trial (registered in-process, as an installed package would be)."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pluggy
import torch
import pytest

from bench.api import hookspecs
from bench.api.interfaces import BuildContext
from bench.api.plugins import GuardedHooks
from bench.api.registry import Registry
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


class _CharCodes(torch.nn.Module):
    """A text encoder written as the docs describe: a variable-width preprocess output under a name
    of its own (`char_ids`, as wide as the longest title of each batch) and a report() of its own."""

    modality = "text"
    frozen = False

    def __init__(self, opts, ctx=None):
        super().__init__()
        self.dim = 16
        self.embed = torch.nn.Embedding(128, self.dim, padding_idx=0)
        self.longest = 0

    def preprocess(self, records):
        codes = [[min(ord(c), 127) or 1 for c in r["title"]][:200] or [1] for r in records]
        width = max(map(len, codes))
        return {"char_ids": torch.tensor([c + [0] * (width - len(c)) for c in codes], dtype=torch.long)}

    def preprocess_fingerprint(self):
        return {"char_codes": 1}

    def forward(self, inputs):
        from bench.api.interfaces import EncoderOutput

        ids = inputs["char_ids"]
        self.longest = max(self.longest, int(ids.shape[1]))
        mask = ids > 0
        sequence = self.embed(ids)
        pooled = (sequence * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return EncoderOutput(sequence=sequence, mask=mask, pooled=pooled)

    def report(self):
        return {"char_codes_longest": self.longest}


def test_a_variable_width_preprocess_output_is_padded_and_every_encoder_reports(registry, write_suite, tmp_path):
    """Cached inputs of an encoder whose `char_ids` width varies from batch to batch are padded (not
    a torch size mismatch), and report() of an encoder that is not fitted on train reaches the row."""
    from bench.api.interfaces import Encoder
    from bench.api.registry import PluginSpec

    encoder_class = type("CharCodes", (_CharCodes, Encoder), {})
    reg = Registry()
    for spec in registry.all():
        reg.add(spec)
    reg.add(PluginSpec("encoder", "char_codes", "characters as codes", lambda opts, ctx: encoder_class(opts)))
    trial = tiny_trial(encoders={"text": {"name": "char_codes"}, "image": TINY_IMAGE},
                       stages=[{"objectives": ["cross_entropy"], "epochs": 1, "batch_size": 16,
                                "optimizer": {"lr": 1e-3}}], eval={"batch_size": 8})
    (spec,) = load_suite(write_suite({"name": "chars", "trial": trial}), reg).trials
    row = run_trial(spec, TrialContext(registry=reg, cache_dir=str(tmp_path / "cache"))).row
    assert row["status"] == "ok", row["error"] + row.get("traceback", "")
    assert row["cache_misses"] > 0  # the inputs went through the cache, where batches are stacked
    assert row["char_codes_longest"] > 8  # report() of an encoder without fit(), after training


def test_preprocess_outputs_that_differ_beyond_dim_1_are_refused_by_name():
    from bench.errors import BenchError
    from bench.trial.cache import stack_padded

    stacked = stack_padded([{"char_ids": torch.ones(2, 3)}, {"char_ids": torch.ones(1, 5)}], ())
    assert stacked["char_ids"].shape == (3, 5) and stacked["char_ids"][:2, 3:].eq(0).all()
    with pytest.raises(BenchError) as err:
        stack_padded([{"patches": torch.ones(2, 3, 4)}, {"patches": torch.ones(1, 3, 6)}], ())
    assert "'patches'" in err.value.message and "only dim 1" in err.value.message
