"""The generated catalogue: deterministic by seed, and hard enough that simple methods neither
saturate nor tie (checked with fixed embeddings scored by bench's retrieval metrics, and with
sklearn classifiers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import f1_score
from sklearn.preprocessing import normalize

from bench.data.catalog import Catalog
from bench.metrics.retrieval import retrieval_metrics
from bench.trial.splits import assign_splits
from mic_bench_plugins.datasets import synthetic_catalog
from mic_bench_plugins.datasets.synthetic_catalog import SyntheticOptions, generate


def _pixels(paths: list[str], side: int = 16) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((side, side), Image.BILINEAR),
                                dtype=np.float32).ravel() / 255 for p in paths])


@pytest.fixture(scope="module")
def default_catalogue(tmp_path_factory):
    """The catalogue the matching suites use (n_products 500), split as a trial splits it."""
    items = generate(SyntheticOptions(n_products=500), tmp_path_factory.mktemp("catalogue"))
    items = assign_splits(Catalog("synthetic_catalog", items).items, None, seed=0)
    train, test = (items.filter(pl.col("split") == s) for s in ("train", "test"))
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    vectorizer.fit(train["title"].to_list())
    pix_train, pix_test = _pixels(train["image"].to_list()), _pixels(test["image"].to_list())
    mean = pix_train.mean(0)
    feats = {}
    for name, part, pix in (("train", train, pix_train), ("test", test, pix_test)):
        text = normalize(vectorizer.transform(part["title"].to_list()).toarray())
        image = normalize(pix - mean)
        feats[name] = {"text": text, "image": image, "concat": np.hstack([text, image])}
    return train, test, feats


def test_same_seed_same_catalogue_other_seed_other(tmp_path):
    opts = SyntheticOptions(n_products=40, n_labels=8, image_size=24)
    for name in "abc":
        (tmp_path / name).mkdir()
    a, b = generate(opts, tmp_path / "a"), generate(opts, tmp_path / "b")
    assert a.drop("image").equals(b.drop("image"))
    for pa, pb in zip(a["image"], b["image"]):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    c = generate(opts.model_copy(update={"seed": 1}), tmp_path / "c")
    assert c["title"].to_list() != a["title"].to_list()


def test_cache_key_changes_with_the_generator_version(tmp_path, monkeypatch):
    opts = SyntheticOptions(n_products=10, n_labels=4, image_size=16, max_listings=2)
    ctx = type("Ctx", (), {"cache_dir": str(tmp_path)})()
    first = synthetic_catalog.load(opts, ctx)
    monkeypatch.setattr(synthetic_catalog, "GENERATOR_VERSION", synthetic_catalog.GENERATOR_VERSION + 1)
    second = synthetic_catalog.load(opts, ctx)
    folders = {Path(first.items["image"][0]).parent.parent, Path(second.items["image"][0]).parent.parent}
    assert len(folders) == 2  # a new generator never reads the old generator's cached table


def test_matching_neither_saturates_nor_ties(default_catalogue):
    """Fixed embeddings on the test split: no modality reaches 0.95 ndcg@10; both together beat each."""
    _, test, feats = default_catalogue
    groups = test["group"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    ndcg = {name: retrieval_metrics(torch.tensor(e, dtype=torch.float32), groups, k=10)["ndcg@10"]
            for name, e in feats["test"].items()}
    assert max(ndcg.values()) < 0.95, ndcg
    assert ndcg["concat"] > max(ndcg["text"], ndcg["image"]) + 0.03, ndcg


def test_classification_needs_both_modalities(default_catalogue):
    """Labels only the title, only the image, or only both name: a classifier on both beats each by far."""
    train, test, feats = default_catalogue
    names = sorted(train["label"].unique().to_list())
    y_train = np.array([names.index(v) for v in train["label"]])
    y_test = np.array([names.index(v) for v in test["label"]])
    f1 = {}
    for kind in ("text", "image", "concat"):
        clf = RidgeClassifier(alpha=1.0).fit(feats["train"][kind], y_train)
        f1[kind] = f1_score(y_test, clf.predict(feats["test"][kind]), average="macro")
    assert f1["concat"] > max(f1["text"], f1["image"]) + 0.15, f1
    assert f1["text"] < 0.7 and f1["image"] < 0.7, f1  # shared family parts do not leak labels


def test_families_share_titles_or_photos_across_products(tmp_path):
    """Near-duplicates exist: some products share a title apart from noise (no noise here)."""
    opts = SyntheticOptions(n_products=120, n_labels=8, image_size=24, title_noise=0, image_noise=0,
                            variant_dropout=0, cue_dropout=0)
    items = generate(opts, tmp_path)
    per_title = items.group_by("title").agg(pl.col("group").n_unique().alias("products"),
                                            pl.col("label").n_unique().alias("labels"))
    assert (per_title["products"] > 1).any()  # same title, other product (told apart by the photo)
    assert (per_title.filter(pl.col("products") > 1)["labels"] > 1).any()  # ... and sometimes another label
