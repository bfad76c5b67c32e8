"""The pairs task: readers in the DeepMatcher and WDC layouts, their bad-input errors, the
catalogue's pair table, suite checks, and trials trained on labelled pairs (no dev/test pair
reaches training)."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from bench.data.catalog import Catalog
from bench.metrics.ties import tie_rounded
from bench.errors import BenchError
from bench.api.interfaces import BuildContext
from bench.config.schema import TrialConfig, TrialSpec
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import TINY_TEXT

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEEPMATCHER = FIXTURES / "deepmatcher_abt_buy"
WDC = FIXTURES / "wdc_products"
WDC_NAME = "wdcproducts50cc50rnd000un"
SYNTHETIC_PAIRS = {"name": "synthetic_catalog", "options": {"n_products": 40, "n_labels": 8, "image_size": 32,
                                                            "pairs": True}}


def _load(registry, name, options):
    return registry.create("dataset", name, options, BuildContext(), field="trial.dataset")


def _wdc_options(**overrides):
    options = {"train": str(WDC / f"{WDC_NAME}_train_small.json.gz"), "valid": str(WDC / f"{WDC_NAME}_valid_small.json.gz"),
               "test": str(WDC / f"{WDC_NAME}_gs.json")}
    return {**options, **overrides}


def _pair_set(catalog, split):
    frame = catalog.pairs.filter(pl.col("split") == split)
    return set(zip(frame["left_id"], frame["right_id"], frame["label"].to_list()))


# ------------------------------------------------------------------------------------- readers


def test_deepmatcher_folder_keeps_both_tables_and_the_pair_split(registry):
    catalog = _load(registry, "deepmatcher", {"path": str(DEEPMATCHER)})
    assert catalog.items.height == 12 + 13 and catalog.tasks == {"pairs"}
    titles = dict(zip(catalog.items["item_id"], catalog.items["title"]))
    # id 0 exists in both tables: two items
    assert titles["a:0"].startswith("sony bravia theater") and titles["b:0"].startswith("sony bravia dav-is50")
    assert (catalog.pairs.group_by("split").len().sort("split").rows()) == [("dev", 5), ("test", 8), ("train", 12)]
    assert ("a:7", "b:7", 1) in _pair_set(catalog, "test") and ("a:1", "b:11", 0) in _pair_set(catalog, "train")
    assert catalog.items["split"].null_count() == catalog.items.height  # items carry no split of their own


def test_deepmatcher_title_columns_and_file_paths(registry, tmp_path):
    copy = tmp_path / "abt"
    shutil.copytree(DEEPMATCHER, copy)
    (copy / "valid.csv").rename(copy / "dev_pairs.csv")
    catalog = _load(registry, "deepmatcher", {"table_a": str(copy / "tableA.csv"), "table_b": str(copy / "tableB.csv"),
                                              "train": str(copy / "train.csv"), "valid": str(copy / "dev_pairs.csv"),
                                              "test": str(copy / "test.csv"), "title": ["name", "price"]})
    titles = dict(zip(catalog.items["item_id"], catalog.items["title"]))
    assert titles["a:1"] == "canon powershot sd1100is digital camera silver $199.99"
    assert titles["a:0"] == "sony bravia theater black micro system davis50b"  # empty price left out
    with pytest.raises(BenchError, match="title"):
        _load(registry, "deepmatcher", {"path": str(copy), "valid": "dev_pairs.csv", "title": "titel"})
    serialized = _load(registry, "deepmatcher", {"path": str(copy), "valid": "dev_pairs.csv", "title": ["name", "price"],
                                                 "serialize": True})
    titles = dict(zip(serialized.items["item_id"], serialized.items["title"]))
    assert titles["a:1"] == "COL name VAL canon powershot sd1100is digital camera silver COL price VAL $199.99"
    assert titles["a:0"] == "COL name VAL sony bravia theater black micro system davis50b COL price VAL"


def _with_pictures(tmp_path, column: str, cell, files) -> Path:
    """A copy of the DeepMatcher fixture whose tables gain an image column (``cell(side, id)``)
    and an img/ folder holding ``files(side, id)``."""
    from PIL import Image

    copy = tmp_path / "abt"
    shutil.copytree(DEEPMATCHER, copy)
    (copy / "img").mkdir()
    for side in ("tableA", "tableB"):
        frame = pl.read_csv(copy / f"{side}.csv", infer_schema=False)
        frame.with_columns(pl.Series(column, [cell(side, i) for i in frame["id"]])).write_csv(copy / f"{side}.csv")
        for i in frame["id"]:
            for name in files(side, i):
                Image.new("RGB", (8, 8), (int(i) * 20, 0, 0)).save(copy / "img" / name)
    return copy


def test_deepmatcher_image_column(registry, tmp_path):
    copy = _with_pictures(tmp_path, "picture", lambda side, i: f"{side}_{i}.png", lambda side, i: [f"{side}_{i}.png"])
    catalog = _load(registry, "deepmatcher", {"path": str(copy), "image": "picture", "images": "img"})
    images = dict(zip(catalog.items["item_id"], catalog.items["image"]))
    assert images["b:12"] == str(copy / "img" / "tableB_12.png") and catalog.has_images
    (copy / "img" / "tableB_12.png").unlink()
    with pytest.raises(BenchError, match="missing"):
        _load(registry, "deepmatcher", {"path": str(copy), "image": "picture", "images": "img"})
    skipped = _load(registry, "deepmatcher", {"path": str(copy), "image": "picture", "images": "img",
                                              "missing_images": "skip"})
    assert skipped.notes["dropped_pairs"] == 2 and "b:12" not in skipped.items["item_id"].to_list()


def test_wdc_products_json_and_gzip_files(registry):
    catalog = _load(registry, "wdc_products", _wdc_options(title=["brand", "title"]))
    assert catalog.tasks == {"pairs"} and catalog.items.height == 20
    titles = dict(zip(catalog.items["item_id"], catalog.items["title"]))
    assert titles["5431"] == "samsung Samsung 860 EVO 500GB 2.5 Inch SATA III Internal SSD MZ-76E500B/EU"
    assert catalog.notes["train_pairs"] == 12 and catalog.notes["dev_pairs"] == 5 and catalog.notes["test_pairs"] == 9
    assert ("6650", "6651", 1) in _pair_set(catalog, "test") and ("5431", "1277", 0) in _pair_set(catalog, "train")


def test_wdc_lspc_validation_id_list(registry, tmp_path):
    (tmp_path / "valid_ids.csv").write_text("pair_id\n5431#8820\n5431#1277\n")
    catalog = _load(registry, "wdc_products", _wdc_options(valid=None, valid_pair_ids=str(tmp_path / "valid_ids.csv")))
    assert _pair_set(catalog, "dev") == {("5431", "8820", 1), ("5431", "1277", 0)}
    assert catalog.notes["train_pairs"] == 10
    (tmp_path / "valid_ids.csv").write_text("pair_id\n1#2\n")
    with pytest.raises(BenchError, match="not in the training file"):
        _load(registry, "wdc_products", _wdc_options(valid=None, valid_pair_ids=str(tmp_path / "valid_ids.csv")))


# --------------------------------------------------------------------------------- bad inputs


def _broken_deepmatcher(tmp_path, name, text):
    copy = tmp_path / "dm"
    shutil.copytree(DEEPMATCHER, copy)
    path = copy / name
    path.write_text(text(path.read_text()))
    return copy, path


@pytest.mark.parametrize("name, edit, message, line", [
    ("test.csv", lambda t: t.replace("9,1,0", "9,77,0"), "rtable_id 77 is not an id of tableB.csv", "line 7"),
    ("train.csv", lambda t: t.replace("2,2,1", "2,2,2"), "the label '2' is not 0 or 1", "line 4"),
    ("valid.csv", lambda t: t.replace("6,6,1", "6,6,"), "the label (empty) is not 0 or 1", "line 3"),
    ("train.csv", lambda t: t.replace("3,3,1", ",3,1"), "lacks its ltable_id", "line 5"),
    ("tableA.csv", lambda t: t.replace("\n5,garmin", "\n4,garmin"), "duplicate id '4'", "line 6"),
    ("tableB.csv", lambda t: t.replace("$47.99", "$47.99,extra"), "has 5 fields but the header has 4", "line 12"),
])
def test_deepmatcher_bad_inputs_name_file_and_line(registry, tmp_path, name, edit, message, line):
    folder, path = _broken_deepmatcher(tmp_path, name, edit)
    with pytest.raises(BenchError) as caught:
        _load(registry, "deepmatcher", {"path": str(folder)})
    text = caught.value.render()
    assert message in text and line in text and str(path) in text and "fix:" in text


def _write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _train_lines() -> list[str]:
    return gzip.decompress((WDC / f"{WDC_NAME}_train_small.json.gz").read_bytes()).decode().splitlines()


def _edited(line: str, **changes) -> str:
    record = json.loads(line)
    record.update(changes)
    return json.dumps(record)


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:2] + ['{"id_left": 1, "title_left": "broken'] + lines[2:], "line 3 is not valid JSON"),
    (lambda lines: lines[:3] + ['["a", "list"]'] + lines[3:], "line 4 is a JSON list"),
    (lambda lines: lines[:1] + [_edited(lines[1], label="yes")] + lines[2:], "line 2: the label 'yes' is not 0 or 1"),
    (lambda lines: lines[:4] + [_edited(lines[4], id_left=None)] + lines[5:], "line 5: id_left is missing"),
    (lambda lines: lines[:5] + [_edited(lines[5], title_left="Samsung 860 EVO 500GB (refurbished)")] + lines[6:],
     "line 6: offer 8820 has the title"),
])
def test_wdc_bad_lines_name_file_and_line(registry, tmp_path, edit, message):
    path = _write_lines(tmp_path / "train.json.gz", edit(_train_lines()), gz=True)
    with pytest.raises(BenchError) as caught:
        _load(registry, "wdc_products", _wdc_options(train=str(path)))
    text = caught.value.render()
    assert message in text and str(path) in text and "fix:" in text


def test_wdc_conflicting_offer_can_keep_the_first(registry, tmp_path):
    lines = _train_lines()
    lines[5] = _edited(lines[5], title_left="Samsung 860 EVO 500GB (refurbished)")
    path = _write_lines(tmp_path / "train.json", lines)
    catalog = _load(registry, "wdc_products", _wdc_options(train=str(path), conflicting_offers="keep_first"))
    assert catalog.notes["conflicting_offers_kept_first"] == 1


def test_corrupt_gzip_is_a_clear_error(registry, tmp_path):
    good = (WDC / f"{WDC_NAME}_train_small.json.gz").read_bytes()
    for name, data in (("cut.json.gz", good[: len(good) // 2]), ("garbled.json.gz", good[:20] + b"\x00" * 40 + good[60:])):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(BenchError) as caught:
            _load(registry, "wdc_products", _wdc_options(train=str(path)))
        assert str(path) in caught.value.render() and "gzip" in caught.value.render()


def test_a_pair_in_two_splits_is_refused(registry, tmp_path):
    folder, path = _broken_deepmatcher(tmp_path, "test.csv", lambda t: t + "0,0,1\n")
    with pytest.raises(BenchError, match=r"train.csv line 2 and test.csv line 10 list the pair a:0 - b:0, in train and in test"):
        _load(registry, "deepmatcher", {"path": str(folder)})


def test_catalog_pair_table_checks_and_fingerprint():
    items = pl.DataFrame({"item_id": ["x", "y", "z"], "title": ["red mug", "mug red", "blue scarf"]})
    pairs = pl.DataFrame({"left_id": ["x", "x"], "right_id": ["y", "z"], "label": [1, 0], "split": ["train", "test"]})
    catalog = Catalog("c", items, pairs=pairs)
    assert "pairs" in catalog.tasks and Catalog("c", items).tasks == frozenset()
    assert Catalog("c", items).fingerprint != catalog.fingerprint
    flipped = Catalog("c", items, pairs=pairs.with_columns(pl.Series("label", [1, 1])))
    assert flipped.fingerprint != catalog.fingerprint
    for bad, message in ((pairs.with_columns(pl.Series("label", [1, 3])), "not 0 or 1"),
                         (pairs.with_columns(pl.Series("right_id", ["y", "w"])), "lacks"),
                         (pairs.with_columns(pl.Series("split", ["train", "ssl"])), "unknown pair split"),
                         (pl.concat([pairs, pairs.head(1).with_columns(pl.lit(0, dtype=pl.Int64).alias("label"))]), "both 0 and 1")):
        with pytest.raises(BenchError, match=message):
            Catalog("c", items, pairs=bad)


def test_synthetic_pairs_are_split_by_product_and_include_hard_negatives(registry):
    catalog = _load(registry, "synthetic_catalog", SYNTHETIC_PAIRS["options"])
    assert {"pairs", "classification", "matching"} <= catalog.tasks
    group = dict(zip(catalog.items["item_id"], catalog.items["group"]))
    label = dict(zip(catalog.items["item_id"], catalog.items["label"]))
    rows = catalog.pairs.rows(named=True)
    assert all((group[r["left_id"]] == group[r["right_id"]]) == (r["label"] == 1) for r in rows)
    split_of = {}
    for r in rows:
        if r["label"] == 1:
            assert split_of.setdefault(group[r["left_id"]], r["split"]) == r["split"]
    negatives = [r for r in rows if r["label"] == 0]
    assert sum(label[r["left_id"]] == label[r["right_id"]] for r in negatives) >= len(negatives) // 3  # hard ones
    plain = _load(registry, "synthetic_catalog", {k: v for k, v in SYNTHETIC_PAIRS["options"].items() if k != "pairs"})
    assert plain.pairs is None and plain.items.equals(catalog.items)


# ------------------------------------------------------------------------------- suite checks


def _pair_trial(**overrides):
    trial = {"dataset": SYNTHETIC_PAIRS, "task": "pairs", "encoders": {"text": TINY_TEXT}, "fusion": "text_only",
             "stages": [{"objectives": ["pair_contrastive"], "epochs": 2, "batch_size": 8, "optimizer": {"lr": 1e-3}}]}
    trial.update(overrides)
    return trial


@pytest.mark.parametrize("overrides, field, message", [
    ({"dataset": {"name": "deepmatcher", "options": {"path": "x"}}, "task": "matching"}, "trial.task", "set task: pairs"),
    ({"stages": [{"objectives": ["cross_entropy"]}]}, "trial.stages[0].objectives[0].name", "use a pair objective"),
    ({"task": "classification"}, "trial.stages[0].objectives[0].name", "set task: pairs"),
    ({"dataset": {"name": "synthetic_catalog", "options": {}}}, "trial.dataset.options.pairs", "pairs: true"),
    ({"splits": {"fractions": {"train": 0.5, "dev": 0.25, "test": 0.25}}}, "trial.splits", "remove splits.fractions"),
])
def test_suite_refuses_pairs_mixed_with_other_tasks(registry, write_suite, overrides, field, message):
    from bench.config.suite import load_suite

    suite = write_suite({"name": "p", "trial": _pair_trial(**overrides)})
    with pytest.raises(BenchError) as caught:
        load_suite(suite, registry)
    assert caught.value.field == field and message in caught.value.fix


def test_pair_suite_loads_with_its_default_selection_metric(registry):
    from bench.config.suite import load_suite

    loaded = load_suite(Path(__file__).resolve().parents[1] / "suites" / "pair_matching.yaml", registry)
    configs = [TrialConfig.model_validate(t.config) for t in loaded.trials]
    task = registry.get("task", "pairs").factory()
    assert configs and all(c.task.name == "pairs" and c.selection.metric is None for c in configs)
    assert task.selection_metric(10) == "dev_pair_ap"


# ------------------------------------------------------------------------------------- trials


@pytest.mark.parametrize("objective", ["pair_contrastive", "pair_classification", "pair_cross_encoder"])
def test_pairs_trial_end_to_end_metrics_match_sklearn(registry, tmp_path, objective):
    cfg = TrialConfig.model_validate(_pair_trial(stages=[{"objectives": [objective], "epochs": 2, "batch_size": 8,
                                                          "optimizer": {"lr": 1e-3}}])).model_dump(mode="json")
    outcome = run_trial(TrialSpec("pairs", {}, {}, cfg), TrialContext(registry=registry, cache_dir=str(tmp_path)))
    row, table = outcome.row, outcome.predictions
    assert row["status"] == "ok", row.get("error")
    assert row["selection_metric"] == "dev_pair_ap" and row["n_evaluations"] == 2
    assert 0 <= row["dev_pair_ap"] <= 1 and 0 <= row["dev_pair_f1"] <= 1  # the dev figures reach the row
    assert row["n_test_pairs"] == table.height and row["n_test_pair_matches"] == int(table["label"].sum())
    labels, scores = table["label"].to_numpy(), table["score"].to_numpy()
    if objective != "pair_cross_encoder":  # cosines; the cross-encoder's scores are logits
        assert np.all((scores >= -1 - 1e-6) & (scores <= 1 + 1e-6))
    scores = tie_rounded(scores)  # cosines equal but for float32 noise are one tie (docs/metrics.md)
    assert row["pair_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    p, r, f, _ = precision_recall_fscore_support(labels, scores >= row["pair_threshold"], average="binary",
                                                 zero_division=np.nan)
    assert row["pair_precision"] is None if np.isnan(p) else row["pair_precision"] == pytest.approx(p, abs=1e-6)
    assert (row["pair_recall"], row["pair_f1"]) == pytest.approx((r, f), abs=1e-6)
    assert table["predicted"].to_list() == (scores >= row["pair_threshold"]).astype(int).tolist()
    part = {"pair_contrastive": "pair_contrastive", "pair_classification": "pair_bce", "pair_cross_encoder": "pair_bce"}
    assert row[f"train_train_{part[objective]}"] is not None


def test_cross_encoder_scores_pairs_by_its_head_and_selection_keeps_that_head(registry, tmp_path):
    """The test scores are the cross-encoder's logits of the two titles read together (recomputed
    here from the restored weights), not a cosine; dev selection restores the head with the encoder."""
    import torch

    from bench.trial.pairs import pair_similarities
    from bench.trial.session import open_trial

    cfg = TrialConfig.model_validate(_pair_trial(stages=[{"objectives": ["pair_cross_encoder"], "epochs": 2,
                                                          "batch_size": 8, "optimizer": {"lr": 1e-3}}]))
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    run = open_trial(cfg, ctx)
    data = run.data
    run.train()
    assert run.task.scorer is not None and run.task.scorer.scores_pairs
    dev, test = run.evaluate()
    row = run.metrics(dev, test)
    by_id = {r["item_id"]: r for r in data.splits["test"]}
    encoder = run.model.encoders["text"]
    with torch.no_grad():
        tokens = encoder.tokenizer([by_id[a]["title"] for a, _, _ in data.pairs["test"]],
                                   [by_id[b]["title"] for _, b, _ in data.pairs["test"]],
                                   truncation="longest_first", max_length=run.task.scorer.max_length,
                                   padding="longest", return_tensors="pt")
        expected = run.task.scorer.head(encoder.model(**tokens).last_hidden_state[:, 0]).squeeze(-1).numpy()
    np.testing.assert_allclose(run.task.test_scores, expected, rtol=1e-4, atol=1e-5)
    cosines, _ = pair_similarities(test, data.pairs["test"])
    assert not np.allclose(run.task.test_scores, cosines)
    assert row["pair_ap"] is not None
    assert any(m is run.task.scorer for m in run.selector().modules)  # kept and restored with the encoder
    # max_length auto: the joined length 99% of the train pairs fit in, and the share it cuts
    lengths = [len(encoder.tokenizer(by_a["title"], by_b["title"])["input_ids"])
               for by_a, by_b in ((dict((r["item_id"], r) for r in data.splits["train"])[a],
                                   dict((r["item_id"], r) for r in data.splits["train"])[b])
                                  for a, b, _ in data.pairs["train"])]
    assert row["pair_max_length"] == int(np.ceil(np.quantile(lengths, 0.99)))
    assert row["pair_truncated_share"] == round(sum(n > row["pair_max_length"] for n in lengths) / len(lengths), 4)


def test_cross_encoder_needs_a_transformer_text_encoder(registry, tmp_path):
    cfg = TrialConfig.model_validate(_pair_trial(encoders={"text": {"name": "tfidf_text", "options": {}}},
                                                 stages=[{"objectives": ["pair_cross_encoder"]}])).model_dump(mode="json")
    row = run_trial(TrialSpec("x", {}, {}, cfg), TrialContext(registry=registry, cache_dir=str(tmp_path))).row
    assert row["status"] == "failed" and "trial.encoders.text" in row["error"] and "hf_text" in row["error"]


def test_dev_and_test_pairs_never_reach_training(registry, tmp_path, monkeypatch):
    """Only train pairs are served, only train-pair items are fitted on (TF-IDF vocabulary), and
    the objective sees only train pairs' labels."""
    from mic_bench_plugins.encoders.tfidf_text import TfidfTextEncoder
    from mic_bench_plugins.objectives.labelled_pairs import PairClassification

    from bench.trial.session import open_trial

    fitted, seen = [], []
    original_fit, original_loss = TfidfTextEncoder.fit, PairClassification.loss
    monkeypatch.setattr(TfidfTextEncoder, "fit", lambda self, records: fitted.append(
        {r["item_id"] for r in records}) or original_fit(self, records))

    def spy_loss(self, model, batch):
        left, right = batch.halves(np.array(batch.item_ids))
        seen.extend(zip(left.tolist(), right.tolist(), batch.pair_labels.tolist()))
        return original_loss(self, model, batch)

    monkeypatch.setattr(PairClassification, "loss", spy_loss)
    # TF-IDF has no parameter; pair_classification's scale and bias make the stage train
    cfg = TrialConfig.model_validate(_pair_trial(encoders={"text": {"name": "tfidf_text", "options": {}}},
                                                 stages=[{"objectives": ["pair_classification"], "epochs": 2,
                                                          "batch_size": 8}]))
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    run = open_trial(cfg, ctx)
    data = run.data
    run.train()
    train = set(data.pairs["train"])
    held_out = {(a, b) for split in ("dev", "test") for a, b, _ in data.pairs[split]}
    assert seen and set(seen) <= train and not {(a, b) for a, b, _ in seen} & held_out
    assert run.task.served_pairs <= {(a, b) for a, b, _ in train}
    train_items = {i for a, b, _ in train for i in (a, b)}
    assert fitted == [train_items]
    only_held_out = {i for a, b in held_out for i in (a, b)} - train_items
    assert only_held_out and not fitted[0] & only_held_out


def test_image_cells_listing_several_pictures_take_the_first_that_exists(registry, tmp_path):
    copy = _with_pictures(tmp_path, "pictures",
                          lambda side, i: (f'["gone_{i}.jpg", "{side}_{i}.png", "{side}_{i}_back.png"]' if int(i) % 2
                                           else f"['{side}_{i}.png']"),
                          lambda side, i: [f"{side}_{i}.png", f"{side}_{i}_back.png"])
    catalog = _load(registry, "deepmatcher", {"path": str(copy), "image": "pictures", "images": "img"})
    images = dict(zip(catalog.items["item_id"], catalog.items["image"]))
    assert images["a:1"] == str(copy / "img" / "tableA_1.png")  # gone_1.jpg does not exist
    assert images["b:2"] == str(copy / "img" / "tableB_2.png")  # Python list literal
    table = copy / "tableB.csv"
    table.write_text(table.read_text().replace("['tableB_4.png']", "[__import__('os').getcwd()]"))
    with pytest.raises(BenchError) as caught:
        _load(registry, "deepmatcher", {"path": str(copy), "image": "pictures", "images": "img"})
    text = caught.value.render()
    assert str(table) in text and "line 6" in text and "not a list of file names" in text


def test_task_pairs_on_item_data_fails_the_trial_clearly(registry, tmp_path):
    """Past the suite checks (an outside dataset, say), a catalogue without pairs fails the trial."""
    cfg = _pair_trial(dataset={"name": "synthetic_catalog", "options": {"n_products": 40, "n_labels": 8,
                                                                        "image_size": 32}})
    row = run_trial(TrialSpec("nopairs", {}, {}, TrialConfig.model_validate(cfg).model_dump(mode="json")),
                    TrialContext(registry=registry, cache_dir=str(tmp_path))).row
    assert row["status"] == "failed" and "has no labelled pairs" in row["error"] and "trial.task" in row["error"]


def test_a_pair_listed_twice_counts_once(registry, tmp_path):
    folder, _ = _broken_deepmatcher(tmp_path, "train.csv", lambda t: t + "1,1,1\n4,12,0\n")
    catalog = _load(registry, "deepmatcher", {"path": str(folder)})
    assert catalog.notes["duplicate_pairs_dropped"] == 2 and catalog.notes["train_pairs"] == 12
    lines = _train_lines()
    record = json.loads(lines[0])
    swapped = {**{k.replace("_left", "_tmp"): v for k, v in record.items()}}
    swapped = {k.replace("_right", "_left"): v for k, v in swapped.items()}
    swapped = {k.replace("_tmp", "_right"): v for k, v in swapped.items()}
    path = _write_lines(tmp_path / "train.json", lines + [json.dumps(swapped)])
    catalog = _load(registry, "wdc_products", _wdc_options(train=str(path)))
    assert catalog.notes["duplicate_pairs_dropped"] == 1 and catalog.notes["train_pairs"] == 12


def test_data_inspect_reports_pairs_per_split(registry):
    from bench.reporting.data_inspect import inspect_catalog, render_report

    report = inspect_catalog(_load(registry, "deepmatcher", {"path": str(DEEPMATCHER)}), check_images=0)
    assert report["pairs"] == {"dev": {"pairs": 5, "matches": 2}, "test": {"pairs": 8, "matches": 4},
                               "train": {"pairs": 12, "matches": 5}}
    assert "train 12 (5 matches)" in render_report(report)


def test_pair_losses_equal_a_loop_over_the_pairs():
    import math

    import torch

    from mic_bench_plugins.objectives.labelled_pairs import (PairClassification, PairClassificationOptions,
                                                             labelled_pair_contrastive_loss)

    from bench.trial.pairs import PairBatch

    torch.manual_seed(0)
    left, right = torch.randn(7, 5), torch.randn(7, 5)
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0])
    pos, neg = [], []
    for a, b, y in zip(left.tolist(), right.tolist(), labels.tolist()):
        d = math.dist(a, b)
        (pos if y else neg).append(d * d if y else max(1.5 - d, 0.0) ** 2)
    expected = sum(pos) / len(pos) + sum(neg) / len(neg)
    assert float(labelled_pair_contrastive_loss(left, right, labels, margin=1.5)) == pytest.approx(expected, rel=1e-5)

    class Embed(torch.nn.Module):  # the "model": returns the batch's stored vectors as its embedding
        def forward(self, batch):
            return type("Out", (), {"embedding": batch.inputs["text"]["vectors"]})()

    batch = PairBatch(item_ids=[str(i) for i in range(14)], inputs={"text": {"vectors": torch.cat([left, right])}},
                      labels=torch.full((14,), -1), groups=torch.full((14,), -1), pair_labels=labels)
    objective = PairClassification(PairClassificationOptions(init_scale=4.0, init_bias=-1.0))
    got = float(objective.loss(Embed(), batch).total.detach())
    terms = []
    for a, b, y in zip(left.tolist(), right.tolist(), labels.tolist()):
        cos = sum(x * z for x, z in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))
        p = 1 / (1 + math.exp(-(4.0 * cos - 1.0)))
        terms.append(-math.log(p) if y else -math.log(1 - p))
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_in_batch_negatives_equal_a_loop_over_the_matches():
    """Each match's left item against every right item of the batch (softmax over scale * cosine);
    a right item identical to the match's own is not a negative; no match: zero."""
    import math

    import torch
    import torch.nn.functional as F

    from mic_bench_plugins.objectives.labelled_pairs import labelled_in_batch_negatives_loss

    torch.manual_seed(1)
    left, right = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    right[4] = right[0]  # pair 4 names the same right item as pair 0
    labels = torch.tensor([1, 0, 1, 0, 0, 0])
    terms = []
    for i in (0, 2):
        keep = [j for j in range(6) if j == i or not torch.equal(right[j], right[i])]
        logits = [3.0 * float(left[i] @ right[j]) for j in keep]
        terms.append(-(logits[keep.index(i)] - math.log(sum(math.exp(v) for v in logits))))
    got = float(labelled_in_batch_negatives_loss(left, right, labels, torch.tensor(3.0)))
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    no_match = torch.zeros(6, dtype=torch.long)
    assert float(labelled_in_batch_negatives_loss(left, right, no_match, torch.tensor(3.0))) == 0.0


@pytest.mark.parametrize("encoder_pooling, option, expected", [("mean", "encoder", "mean"), ("cls", "encoder", "cls"),
                                                               ("mean", "cls", "cls"), ("cls", "mean", "mean")])
def test_cross_encoder_head_reads_the_pooling_of_its_encoder_or_its_own(encoder_pooling, option, expected):
    """A sentence-embedding model trained with mean pooling has an untrained [CLS]: by default the
    head reads what the text encoder pools; the option overrides it."""
    import torch

    from mic_bench_plugins.encoders.hf_text import HFTextEncoder, HFTextOptions
    from mic_bench_plugins.objectives.labelled_pairs import PairCrossEncoder, PairCrossEncoderOptions

    encoder = HFTextEncoder(HFTextOptions(**{**TINY_TEXT["options"], "pooling": encoder_pooling})).eval()
    objective = PairCrossEncoder(PairCrossEncoderOptions(max_length=24, pooling=option), encoder.dim).eval()
    model = type("Model", (), {"encoders": {"text": encoder}})()
    left, right = ["sony bravia tv 40 inch", "canon camera"], ["sony tv 40", "nikon d3000 camera body black"]
    with torch.no_grad():
        got = objective.logits(model, left, right)
        tokens = encoder.tokenizer(left, right, truncation="longest_first", max_length=24, padding="longest",
                                   return_tensors="pt")
        hidden = encoder.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1) if expected == "mean" else hidden[:, 0]
        other = hidden[:, 0] if expected == "mean" else (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(got, objective.head(pooled).squeeze(-1))
    assert not torch.allclose(got, objective.head(other).squeeze(-1))


def test_a_test_split_without_a_matching_pair_gives_null_figures_with_a_note(registry, tmp_path):
    """Precision, recall and F1 of the match class are undefined without a match to find: null with
    pair_note in an ok row, never 0.0 (which a leaderboard would rank)."""

    folder = tmp_path / "abt_buy"
    shutil.copytree(DEEPMATCHER, folder)
    lines = (folder / "test.csv").read_text().splitlines()
    (folder / "test.csv").write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + ",0" for line in lines[1:]]) + "\n")
    cfg = TrialConfig.model_validate(_pair_trial(dataset={"name": "deepmatcher", "options": {"path": str(folder)}})
                                     ).model_dump(mode="json")
    row = run_trial(TrialSpec("pairs", {}, {}, cfg), TrialContext(registry=registry, cache_dir=str(tmp_path))).row
    assert row["status"] == "ok", row.get("error")
    assert row["n_test_pair_matches"] == 0 and row["pair_threshold"] is not None  # chosen on dev, which has matches
    assert (row["pair_precision"], row["pair_recall"], row["pair_f1"], row["pair_ap"]) == (None, None, None, None)
    assert "no test pair is a match: no average precision, precision, recall or F1" in row["pair_note"]
