"""Pair files as they come: a pair listed twice (in one split with two labels, or in two splits)
is refused naming both files and lines, or settled as the reader's options say, each choice
counted in the catalogue's notes (the rows' data_* columns); an empty pair file says so."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from bench.errors import BenchError
from bench.api.interfaces import BuildContext

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEEPMATCHER = FIXTURES / "deepmatcher_abt_buy"
WDC = FIXTURES / "wdc_products"
WDC_NAME = "wdcproducts50cc50rnd000un"


def _load(registry, name, options):
    return registry.create("dataset", name, options, BuildContext(), field="trial.dataset")


def _deepmatcher(tmp_path, **appended) -> Path:
    """A copy of the fixture with lines appended to its pair files (file name -> text)."""
    copy = tmp_path / "dm"
    shutil.copytree(DEEPMATCHER, copy)
    for name, text in appended.items():
        path = copy / f"{name}.csv"
        path.write_text(path.read_text() + text)
    return copy


def _pairs(catalog, split):
    frame = catalog.pairs.filter(pl.col("split") == split)
    return set(zip(frame["left_id"], frame["right_id"], frame["label"].to_list()))


# train.csv holds "1,1,1" on line 3 (13 lines: header + 12 pairs); test.csv holds "7,7,1" on line 2
CONFLICT = {"train": "1,1,0\n"}          # line 14: the pair a:1 - b:1 again, labelled 0
CROSSING = {"test": "1,1,1\n"}           # line 10 of test.csv: a train pair in test


def test_a_pair_with_both_labels_names_both_lines_and_the_option(registry, tmp_path):
    folder = _deepmatcher(tmp_path, **CONFLICT)
    with pytest.raises(BenchError) as caught:
        _load(registry, "deepmatcher", {"path": str(folder)})
    text = caught.value.render()
    assert "train.csv line 3 labels the pair a:1 - b:1 1, train.csv line 14 labels it 0" in text
    assert str(folder / "train.csv") in text and "tableA" not in text and "conflicting_pairs: keep_first" in text


@pytest.mark.parametrize("policy, kept, note", [("keep_first", {("a:1", "b:1", 1)}, "conflicting_pairs_kept_first"),
                                                ("drop", set(), "conflicting_pairs_dropped")])
def test_a_pair_with_both_labels_can_keep_the_first_or_go(registry, tmp_path, policy, kept, note):
    catalog = _load(registry, "deepmatcher", {"path": str(_deepmatcher(tmp_path, **CONFLICT)),
                                              "conflicting_pairs": policy})
    assert {p for p in _pairs(catalog, "train") if p[:2] == ("a:1", "b:1")} == kept
    assert catalog.notes[note] == 1
    assert catalog.notes["train_pairs"] == 12 - (policy == "drop")


def test_a_pair_in_two_splits_names_both_files_and_lines(registry, tmp_path):
    folder = _deepmatcher(tmp_path, **CROSSING)
    with pytest.raises(BenchError) as caught:
        _load(registry, "deepmatcher", {"path": str(folder)})
    text = caught.value.render()
    assert "train.csv line 3 and test.csv line 10 list the pair a:1 - b:1, in train and in test" in text
    assert str(folder / "test.csv") in text and "cross_split_pairs: keep_later" in text


@pytest.mark.parametrize("policy, in_train, in_test, note", [("keep_later", False, True, "cross_split_pairs_kept_later"),
                                                             ("drop", False, False, "cross_split_pairs_dropped")])
def test_a_pair_in_two_splits_can_stay_in_the_later_split_or_go(registry, tmp_path, policy, in_train, in_test, note):
    catalog = _load(registry, "deepmatcher", {"path": str(_deepmatcher(tmp_path, **CROSSING)),
                                              "cross_split_pairs": policy})
    assert (("a:1", "b:1", 1) in _pairs(catalog, "train")) is in_train
    assert (("a:1", "b:1", 1) in _pairs(catalog, "test")) is in_test
    assert catalog.notes[note] == 1 and "pairs" in catalog.tasks


def test_labels_that_differ_across_splits_follow_the_later_split(registry, tmp_path):
    folder = _deepmatcher(tmp_path, test="1,1,0\n")
    catalog = _load(registry, "deepmatcher", {"path": str(folder), "cross_split_pairs": "keep_later"})
    assert ("a:1", "b:1", 0) in _pairs(catalog, "test") and not any(p[:2] == ("a:1", "b:1")
                                                                    for p in _pairs(catalog, "train"))


def test_the_counts_reach_the_trial_row(registry, tmp_path):
    from bench.config.schema import TrialConfig, TrialSpec
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    folder = _deepmatcher(tmp_path, train="1,1,0\n", test="2,2,1\n")
    cfg = {"dataset": {"name": "deepmatcher", "options": {"path": str(folder), "conflicting_pairs": "drop",
                                                          "cross_split_pairs": "keep_later"}},
           "task": "pairs", "encoders": {"text": {"name": "tfidf_text", "options": {"max_features": 256}}},
           "fusion": "text_only", "stages": [{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 4}]}
    spec = TrialSpec("repeats", {}, {}, TrialConfig.model_validate(cfg).model_dump(mode="json"))
    row = run_trial(spec, TrialContext(registry=registry, cache_dir=str(tmp_path / "cache"))).row
    assert row["status"] == "ok", row.get("error")
    assert row["data_conflicting_pairs_dropped"] == 1 and row["data_cross_split_pairs_kept_later"] == 1
    assert row["n_train_pairs"] == 10 and row["n_test_pairs"] == 9


def _wdc_lines(name):
    path = WDC / name
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode().splitlines()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _wdc(**overrides):
    return {"train": str(WDC / f"{WDC_NAME}_train_small.json.gz"), "valid": str(WDC / f"{WDC_NAME}_valid_small.json.gz"),
            "test": str(WDC / f"{WDC_NAME}_gs.json"), **overrides}


def _flipped(line: str) -> str:
    record = json.loads(line)
    return json.dumps({**record, "label": 1 - int(record["label"])})


def test_wdc_a_pair_with_both_labels_names_both_lines(registry, tmp_path):
    lines = _wdc_lines(f"{WDC_NAME}_train_small.json.gz")
    path = _write(tmp_path / "train.json", lines + [_flipped(lines[2])])
    with pytest.raises(BenchError) as caught:
        _load(registry, "wdc_products", _wdc(train=str(path)))
    text = caught.value.render()
    assert f"train.json line 3 labels the pair" in text and f"train.json line {len(lines) + 1} labels it" in text
    catalog = _load(registry, "wdc_products", _wdc(train=str(path), conflicting_pairs="keep_first"))
    assert catalog.notes["conflicting_pairs_kept_first"] == 1 and catalog.notes["train_pairs"] == 12


def test_wdc_a_train_pair_in_the_test_file_can_stay_in_test(registry, tmp_path):
    train = _wdc_lines(f"{WDC_NAME}_train_small.json.gz")
    test = _wdc_lines(f"{WDC_NAME}_gs.json")
    path = _write(tmp_path / "gs.json", test + [train[0]])
    with pytest.raises(BenchError, match=rf"line 1 and gs.json line {len(test) + 1} list the pair"):
        _load(registry, "wdc_products", _wdc(test=str(path)))
    catalog = _load(registry, "wdc_products", _wdc(test=str(path), cross_split_pairs="keep_later"))
    assert catalog.notes["cross_split_pairs_kept_later"] == 1 and catalog.notes["train_pairs"] == 11


@pytest.mark.parametrize("option", ["test", "valid", "train"])
def test_an_empty_pair_file_says_so(registry, tmp_path, option):
    folder = _deepmatcher(tmp_path)
    name = {"valid": "valid"}.get(option, option)
    (folder / f"{name}.csv").write_text("ltable_id,rtable_id,label\n")
    with pytest.raises(BenchError) as caught:
        _load(registry, "deepmatcher", {"path": str(folder)})
    text = caught.value.render()
    assert "the pair file is empty" in text and str(folder / f"{name}.csv") in text
    assert ("valid: null" in text) is (option == "valid")
