"""The classic baselines: TF-IDF titles (fitted on train only) and the sklearn linear probe.

Numbers are checked against independent computations: sklearn's own TfidfVectorizer /
TruncatedSVD / LogisticRegression on the same texts and features, and a brute-force NDCG loop.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler, normalize

from bench.trial.cache import CacheStore
from bench.trial.fitting import fit_encoder, fit_key
from bench.api.interfaces import BuildContext, TaskInfo
from bench.config.schema import TrialConfig, TrialSpec
from bench.config.suite import load_suite
from bench.trial.build import build_model
from bench.trial.context import TrialContext
from bench.trial.prepare import prepare_data
from bench.trial.run import run_trial
from bench.trial.session import open_trial
from conftest import TINY_IMAGE, TINY_TEXT, tiny_trial

SUITES = Path(__file__).resolve().parents[1] / "suites"
TRAIN_TITLES = ["acme red kettle 1l", "nova blue kettle pro", "zento cordless drill set", "acme drill bits pack",
                "lumina scented candle", "orbit soy candle large", "kora wool scarf", "kora silk scarf red"]
TEST_TITLES = ["acme kettle zyzzyva", "orbit candle", "nova scarf blue", ""]
TFIDF = {"name": "tfidf_text", "options": {}}


def _records(titles, prefix="i"):
    return [{"item_id": f"{prefix}{i}", "title": t, "image": None, "label": i % 3, "group": -1}
            for i, t in enumerate(titles)]


def _tfidf(registry, **options):
    spec = registry.get("encoder", "tfidf_text")
    return spec.build(options, BuildContext())


def _fitted(registry, train=TRAIN_TITLES, store=None, **options):
    encoder = _tfidf(registry, **options)
    fit_encoder(encoder, _records(train), store)
    return encoder


# ---------------------------------------------------------------------------------------- TF-IDF


def test_vocabulary_comes_from_train_titles_only(registry):
    encoder = _fitted(registry, analyzer="word", ngram_range=[1, 1])
    vocabulary = set(encoder._vectorizer.vocabulary_)
    assert "kettle" in vocabulary and "zyzzyva" not in vocabulary  # a word only in test gets no column
    row = encoder.preprocess(_records(["zyzzyva"]))["tfidf"]
    assert row.abs().sum() == 0
    assert encoder.report()["tfidf_vocabulary"] == len(vocabulary)


@pytest.mark.parametrize("options", [
    {"analyzer": "word", "ngram_range": [1, 2], "sublinear_tf": True},
    {"analyzer": "char_wb", "ngram_range": [2, 4], "sublinear_tf": True},
    {"analyzer": "char", "ngram_range": [3, 3], "sublinear_tf": False, "max_features": 40},
])
def test_vectors_equal_sklearn_tfidf(registry, options):
    encoder = _fitted(registry, **options)
    reference = TfidfVectorizer(analyzer=options["analyzer"], ngram_range=tuple(options["ngram_range"]),
                                sublinear_tf=options["sublinear_tf"], strip_accents="unicode",
                                max_features=options.get("max_features", 8192)).fit(TRAIN_TITLES)
    expected = reference.transform(TEST_TITLES).toarray()
    got = encoder.preprocess(_records(TEST_TITLES))["tfidf"].numpy()
    assert got.shape == (len(TEST_TITLES), encoder.dim)
    np.testing.assert_allclose(got[:, : expected.shape[1]], expected, atol=1e-6)
    assert not got[:, expected.shape[1]:].any()  # columns beyond the fitted vocabulary stay zero
    assert encoder(encoder.preprocess(_records(TEST_TITLES))).pooled.shape == (len(TEST_TITLES), encoder.dim)


def test_svd_vectors_equal_sklearn_lsa(registry):
    encoder = _fitted(registry, svd_dim=4, svd_seed=3)
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, strip_accents="unicode",
                            max_features=8192).fit(TRAIN_TITLES)
    svd = TruncatedSVD(n_components=4, random_state=3).fit(tfidf.transform(TRAIN_TITLES))
    expected = normalize(svd.transform(tfidf.transform(TEST_TITLES)))
    got = encoder.preprocess(_records(TEST_TITLES))["tfidf"].numpy()
    assert encoder.dim == 4
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert 0 < encoder.report()["tfidf_svd_explained_variance"] <= 1


def test_fitted_state_round_trips_through_the_cache(registry, tmp_path, monkeypatch):
    store = CacheStore(tmp_path)
    first = _fitted(registry, store=store)
    assert store.misses == 1 and list(tmp_path.rglob("*.safetensors"))
    from mic_bench_plugins.encoders.tfidf_text import TfidfTextEncoder

    def refuse(self, records):
        raise AssertionError("a cached fit must not be recomputed")

    monkeypatch.setattr(TfidfTextEncoder, "fit", refuse)
    second = _fitted(registry, store=store)
    assert store.hits == 1
    assert second.preprocess_fingerprint() == first.preprocess_fingerprint()
    assert torch.equal(second.preprocess(_records(TEST_TITLES))["tfidf"], first.preprocess(_records(TEST_TITLES))["tfidf"])


def test_changed_train_split_or_options_change_the_keys(registry):
    encoder = _tfidf(registry)
    base = fit_key(encoder, _records(TRAIN_TITLES))
    changed_title = fit_key(encoder, _records(TRAIN_TITLES[:-1] + ["kora cotton scarf red"]))
    fewer_items = fit_key(encoder, _records(TRAIN_TITLES[:-1]))
    other_options = fit_key(_tfidf(registry, analyzer="word"), _records(TRAIN_TITLES))
    assert len({base, changed_title, fewer_items, other_options}) == 4
    # and the feature caches follow the fitted state: a different train split, a different fingerprint
    a = _fitted(registry).preprocess_fingerprint()
    b = _fitted(registry, train=TRAIN_TITLES[:-1] + ["kora cotton scarf red"]).preprocess_fingerprint()
    assert a != b


def test_unfitted_encoder_fails_clearly(registry):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="before it was fitted"):
        _tfidf(registry).preprocess(_records(TEST_TITLES))


def test_trial_fits_tfidf_on_train_records_only(registry, monkeypatch):
    from mic_bench_plugins.encoders.tfidf_text import TfidfTextEncoder

    seen = []
    original = TfidfTextEncoder.fit

    def spy(self, records):
        seen.append({r["item_id"] for r in records})
        return original(self, records)

    monkeypatch.setattr(TfidfTextEncoder, "fit", spy)
    cfg = TrialConfig.model_validate(tiny_trial(encoders={"text": TFIDF}, cache=False))
    ctx = TrialContext(registry=registry)
    run = open_trial(cfg, ctx)
    data = run.data
    run.train()
    assert seen == [{r["item_id"] for r in data.splits["train"]}]
    others = {r["item_id"] for name in ("dev", "test", "ssl") for r in data.splits[name]}
    assert others and not seen[0] & others


def test_tfidf_text_only_trial_end_to_end(registry, tmp_path):
    cfg = tiny_trial(encoders={"text": TFIDF}, stages=[{"objectives": ["cross_entropy"], "epochs": 3,
                                                        "batch_size": 16, "optimizer": {"lr": 1e-2}}])
    row = run_trial(TrialSpec("tfidf", {}, {}, cfg), TrialContext(registry=registry, cache_dir=str(tmp_path))).row
    assert row["status"] == "ok", row.get("error")
    assert 0 < row["tfidf_vocabulary"] <= 8192 and row["accuracy"] > 0
    assert row["n_trainable_params"] > 0  # the head trains; the TF-IDF encoder has no parameter


# ----------------------------------------------------------------------------------- linear probe


def _blobs(n, dim, n_labels, seed, absent=None):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(n_labels, dim)) * 1.5
    y = rng.integers(0, n_labels, n)
    if absent is not None:
        y[y == absent] = (absent + 1) % n_labels
    x = centres[y] + rng.normal(size=(n, dim)) * np.linspace(0.5, 3.0, dim)
    x[:, 0] = 7.0  # a constant feature
    x[:, 1] *= 100.0  # a feature on another scale
    return x.astype(np.float32), y


def _probe(registry, n_labels, dims=(6, 4), **options):
    spec = registry.get("fusion", "linear_probe")
    encoders = {"text": type("E", (), {"dim": dims[0], "frozen": True})(),
                "image": type("E", (), {"dim": dims[1], "frozen": True})()}
    task = TaskInfo("classification", [f"l{i}" for i in range(n_labels)], has_groups=False)
    return spec.build(options, BuildContext(task=task, encoders=encoders))


def _split(x):
    from bench.api.interfaces import EncoderOutput

    t, v = torch.from_numpy(x[:, :6]), torch.from_numpy(x[:, 6:])
    return {"text": EncoderOutput(t[:, None], torch.ones(len(x), 1, dtype=torch.bool), t),
            "image": EncoderOutput(v[:, None], torch.ones(len(x), 1, dtype=torch.bool), v)}


@pytest.mark.parametrize("n_labels,absent", [(5, 3), (2, None)])
def test_linear_probe_matches_sklearn_logistic_regression(registry, n_labels, absent):
    x_train, y_train = _blobs(300, 10, n_labels, seed=0, absent=absent)
    x_test, y_test = _blobs(200, 10, n_labels, seed=1)
    given = y_train.copy()
    given[-20:] = -1  # unknown labels: left out of the fit
    probe = _probe(registry, n_labels, C=0.5)
    probe.fit_on_train({k: v.pooled for k, v in _split(x_train).items()}, torch.from_numpy(given))
    logp = probe.eval()(_split(x_test)).logits

    x_known, y_known = x_train[:-20].astype(np.float64), y_train[:-20]
    scaler = StandardScaler().fit(x_known)
    reference = LogisticRegression(C=0.5, max_iter=5000, tol=1e-8).fit(scaler.transform(x_known), y_known)
    expected = np.zeros((len(x_test), n_labels))
    expected[:, reference.classes_] = reference.predict_proba(scaler.transform(x_test.astype(np.float64)))
    probs = logp.exp().numpy()
    np.testing.assert_allclose(probs, expected, atol=2e-3)
    ours, theirs = (probs.argmax(1) == y_test).mean(), (expected.argmax(1) == y_test).mean()
    assert ours >= theirs - 0.01 and ours > 1.5 / n_labels
    if absent is not None:
        assert math.isclose(float(logp[:, absent].max()), math.log(1e-12), rel_tol=1e-5)  # p = 0, floored
    assert torch.allclose(logp.exp().sum(1), torch.ones(len(x_test)), atol=1e-4)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_linear_probe_keeps_the_c_with_the_best_dev_metric(registry, metric):
    from sklearn.metrics import f1_score

    grid = [0.001, 0.01, 1.0, 100.0]
    x_train, y_train = _blobs(120, 10, 4, seed=2)
    x_dev, y_dev = _blobs(150, 10, 4, seed=3)
    probe = _probe(registry, 4, c_grid=grid).eval()
    probe.fit_on_train({k: v.pooled for k, v in _split(x_train).items()}, torch.from_numpy(y_train))
    probe.fit_on_dev(probe(_split(x_dev)), torch.from_numpy(y_dev), metric=metric)
    out = probe(_split(x_dev))
    assert torch.equal(out.logits, list(out.candidate_logits.values())[grid.index(probe.report()["linear_probe_C"])])

    scaler = StandardScaler().fit(x_train.astype(np.float64))
    preds = [LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x_train), y_train)
             .predict(scaler.transform(x_dev)) for c in grid]
    scores = [(p == y_dev).mean() if metric == "accuracy" else f1_score(y_dev, p, average="macro") for p in preds]
    best = [c for c, a in zip(grid, scores) if a >= max(scores) - 1e-9]
    expected = min(best, key=lambda c: abs(math.log10(c)))
    assert probe.report()["linear_probe_C"] == expected


def test_linear_probe_refuses_encoders_that_train(registry):
    from bench.errors import BenchError

    cfg = TrialConfig.model_validate(tiny_trial(fusion="linear_probe"))  # tiny encoders train
    task = TaskInfo("classification", ["a", "b"], has_groups=False)
    with pytest.raises(BenchError, match="freeze: all"):
        build_model(cfg, TrialContext(registry=registry), task)


def _frozen(ref):
    return {**ref, "options": {**ref["options"], "freeze": "all"}}


def test_linear_probe_trial_equals_sklearn_on_the_same_frozen_features(registry, tmp_path):
    """End to end: the row's test accuracy is that of sklearn fitted on features we compute here."""
    cfg_dict = tiny_trial(encoders={"text": _frozen(TINY_TEXT), "image": _frozen(TINY_IMAGE)},
                          fusion={"name": "linear_probe", "options": {"C": 1.0}})
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    row = run_trial(TrialSpec("probe", {}, {}, cfg_dict), ctx).row
    assert row["status"] == "ok", row.get("error")
    assert row["n_trainable_params"] == 0 and row["linear_probe_C"] == 1.0 and row["train_s"] > 0

    cfg = TrialConfig.model_validate(cfg_dict)
    data = prepare_data(cfg, ctx)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, ctx, data.task).eval()

    def features(records):
        with torch.no_grad():
            parts = [model.encoders[m](model.encoders[m].preprocess(records)).pooled for m in ("image", "text")]
        return torch.cat(parts, 1).double().numpy(), np.array([r["label"] for r in records])

    width, n_labels = sum(e.dim for e in model.encoders.values()), data.task.num_labels
    encoder_params = sum(p.numel() for e in model.encoders.values() for p in e.parameters())
    assert row["n_params"] == encoder_params + n_labels * width + n_labels  # the kept classifier, frozen

    x_train, y_train = features(data.splits["train"])
    x_test, y_test = features(data.splits["test"])
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(x_train), y_train)
    expected = float((clf.predict(scaler.transform(x_test)) == y_test).mean())
    assert row["accuracy"] == pytest.approx(expected, abs=1.5 / len(y_test))


# ------------------------------------------------------------------------------------- matching


def _ndcg_at_k(embeddings: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Brute force: every item queries all others by cosine similarity; binary relevance."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    scores = []
    for q in range(len(groups)):
        others = [j for j in range(len(groups)) if j != q]
        relevant = [j for j in others if groups[j] == groups[q]]
        if not relevant:
            continue
        ranked = sorted(others, key=lambda j: -sims[q, j])[:k]
        dcg = sum(1 / math.log2(i + 2) for i, j in enumerate(ranked) if groups[j] == groups[q])
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        scores.append(dcg / ideal)
    return float(np.mean(scores))


def test_tfidf_matching_gives_the_brute_force_retrieval_metrics(registry, tmp_path):
    cfg_dict = tiny_trial(task="matching", encoders={"text": TFIDF},
                          dataset={"name": "synthetic_catalog", "options": {"n_products": 120, "n_labels": 8,
                                                                            "image_size": 32}},
                          stages=[{"objectives": ["triplet"], "epochs": 1, "batch_size": 16}])
    ctx = TrialContext(registry=registry, cache_dir=str(tmp_path))
    row = run_trial(TrialSpec("match", {}, {}, cfg_dict), ctx).row
    assert row["status"] == "ok", row.get("error")

    data = prepare_data(TrialConfig.model_validate(cfg_dict), ctx)
    titles = lambda split: [r["title"] for r in data.splits[split]]  # noqa: E731
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                                 strip_accents="unicode", max_features=8192).fit(titles("train"))
    test_vectors = vectorizer.transform(titles("test")).toarray()
    groups = np.array([r["group"] for r in data.splits["test"]])
    expected = _ndcg_at_k(test_vectors, groups, k=10)
    assert row["ndcg@10"] == pytest.approx(expected, abs=1e-6)
    assert row["ndcg@10"] > 0.5 and 0 < row["f1"] <= 1  # reworded titles of one product share n-grams


# --------------------------------------------------------------------------------------- suites


def test_suites_with_baselines_validate(registry):
    baselines = load_suite(SUITES / "baselines.yaml", registry)
    methods = {t.axes["method"] for t in baselines.trials}
    assert {"tfidf_text_only", "tfidf_logreg", "linear_probe_minilm_effnet"} <= methods
    headline = load_suite(SUITES / "mic_fusion.yaml", registry)
    assert any(t.config["encoders"]["text"]["name"] == "tfidf_text" for t in headline.trials)
    matching = load_suite(SUITES / "product_matching.yaml", registry)
    assert any(t.config["encoders"].get("text", {}).get("name") == "tfidf_text" for t in matching.trials)


@pytest.mark.parametrize("fusion", ["text_only", "late", "late_avg_embedding", "shallow", "cross_modal_gated_attention"])
def test_tfidf_feeds_every_fusion(registry, fusion):
    """A pooled vector, and a one-token sequence for the fusions that read sequences."""
    from bench.trial.records import Collate
    from mic_bench_plugins.objectives.model_probe import kind_widths

    # cross-modal attention is text-width squared (its default width is the text encoder's): a narrow vocabulary
    narrow = {"name": "tfidf_text", "options": {"max_features": 2048}}
    cfg = TrialConfig.model_validate(tiny_trial(encoders={"text": narrow, "image": TINY_IMAGE}, fusion=fusion))
    model = build_model(cfg, TrialContext(registry=registry), TaskInfo("classification", ["a", "b", "c"], False))
    fit_encoder(model.encoders["text"], _records(TRAIN_TITLES), None)
    records = [{**r, "image": None} for r in _records(TEST_TITLES)]
    out = model(Collate({m: model.encoders[m].preprocess for m in ("text", "image")})(records))
    assert out.logits.shape == (len(records), 3) and torch.isfinite(out.logits).all()
    sum(torch.nn.functional.cross_entropy(p, torch.tensor([0, 1, 2, 0])) for p in out.trained_logits()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fusion.parameters())
    assert kind_widths(dict(model.encoders.items()), model.fusion)["embedding"] == out.embedding.shape[1]
