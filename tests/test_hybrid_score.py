"""hybrid_text + hybrid_score: w cos_tfidf + (1 - w) cos_neural, w chosen on dev by the trial's
selection metric, for task pairs and for same-product retrieval."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.config.schema import TrialConfig, TrialSpec
from bench.errors import BenchError
from bench.api.interfaces import BuildContext, EncoderOutput, TaskInfo
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import TINY_TEXT
from mic_bench_plugins.fusions.hybrid_score import HybridScoreFusion, HybridScoreOptions

TFIDF = {"analyzer": "char_wb", "ngram_range": [2, 4], "max_features": 512}
NEURAL = {**TINY_TEXT["options"], "freeze": "all", "pooling": "mean"}
HYBRID = {"name": "hybrid_text", "options": {"lexical": TFIDF, "neural": NEURAL}}
PAIRS_DATA = {"name": "synthetic_catalog", "options": {"n_products": 40, "n_labels": 8, "image_size": 32, "pairs": True}}
MATCHING_DATA = {"name": "synthetic_catalog", "options": {"n_products": 80, "n_labels": 8, "image_size": 32}}
NOTHING_TRAINS = [{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 16}]


def test_the_embedding_cosine_is_the_weighted_sum_of_the_two_cosines():
    torch.manual_seed(0)
    lexical, neural = F.normalize(torch.rand(6, 10), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    fusion = HybridScoreFusion((10, 4), HybridScoreOptions())
    for w in (0.0, 0.3, 1.0):
        emb = fusion.mix(torch.cat([lexical, neural], dim=-1), w)
        assert torch.allclose(emb.norm(dim=-1), torch.ones(6), atol=1e-6)
        expected = w * lexical @ lexical.T + (1 - w) * neural @ neural.T
        assert torch.allclose(emb @ emb.T, expected, atol=1e-6)


def _row(registry, tmp_path, name, cfg):
    spec = TrialSpec(name, {}, {}, TrialConfig.model_validate(cfg).model_dump(mode="json"))
    row = run_trial(spec, TrialContext(registry=registry, cache_dir=str(tmp_path))).row
    assert row["status"] == "ok", row.get("error")
    return row


def test_pairs_trial_chooses_the_weight_by_dev_pair_ap_and_never_loses_to_a_part_on_dev(registry, tmp_path):
    base = {"dataset": PAIRS_DATA, "task": "pairs", "stages": NOTHING_TRAINS}
    hybrid = _row(registry, tmp_path, "hybrid", {**base, "encoders": {"text": HYBRID}, "fusion": "hybrid_score"})
    lexical = _row(registry, tmp_path, "tfidf", {**base, "encoders": {"text": {"name": "tfidf_text", "options": TFIDF}},
                                                 "fusion": "text_only"})
    neural = _row(registry, tmp_path, "neural", {**base, "encoders": {"text": {"name": "hf_text", "options": NEURAL}},
                                                 "fusion": "text_only"})
    assert hybrid["hybrid_weight_metric"] == "dev_pair_ap" and 0.0 <= hybrid["hybrid_weight"] <= 1.0
    assert hybrid["hybrid_weight_note"] is None and hybrid["n_trainable_params"] == 0
    # w = 1 is TF-IDF alone and w = 0 the neural encoder alone: both are candidates on dev
    assert hybrid["dev_pair_ap"] >= max(lexical["dev_pair_ap"], neural["dev_pair_ap"]) - 1e-6
    given = _row(registry, tmp_path, "w1", {**base, "encoders": {"text": HYBRID},
                                            "fusion": {"name": "hybrid_score", "options": {"weight": 1.0}}})
    assert given["hybrid_weight"] == 1.0 and given["hybrid_weight_note"] == "given in the options"
    assert given["pair_ap"] == pytest.approx(lexical["pair_ap"], abs=1e-5)
    assert given["pair_f1"] == pytest.approx(lexical["pair_f1"], abs=1e-5)


def test_matching_trial_chooses_the_weight_by_the_retrieval_selection_metric(registry, tmp_path):
    row = _row(registry, tmp_path, "hybrid", {"dataset": MATCHING_DATA, "task": "matching",
                                              "encoders": {"text": HYBRID}, "fusion": "hybrid_score",
                                              "stages": [{"objectives": ["triplet"], "epochs": 1}],
                                              "selection": "last"})
    assert row["hybrid_weight_metric"] == "dev_ndcg@10" and row["ndcg@10"] is not None


def test_hybrid_score_needs_a_hybrid_text_encoder_and_a_similarity_task(registry):
    spec = registry.get("fusion", "hybrid_score")
    tfidf = registry.get("encoder", "tfidf_text").build({}, BuildContext())
    with pytest.raises(BenchError, match="hybrid_text"):
        spec.build({}, BuildContext(task=TaskInfo("pairs", [], False), encoders={"text": tfidf}))
    hybrid = registry.get("encoder", "hybrid_text").build({"lexical": TFIDF, "neural": NEURAL}, BuildContext())
    assert hybrid.frozen and hybrid.dim == 512 + hybrid.neural.dim
    with pytest.raises(BenchError, match="no classifier"):
        spec.build({}, BuildContext(task=TaskInfo("classification", ["a", "b"], False), encoders={"text": hybrid}))


def test_a_title_without_a_known_ngram_keeps_a_zero_lexical_part(registry):
    from bench.trial.fitting import fit_encoder

    encoder = registry.get("encoder", "hybrid_text").build({"lexical": TFIDF, "neural": NEURAL}, BuildContext())
    fit_encoder(encoder, [{"item_id": str(i), "title": t, "image": None, "label": None, "group": None}
                          for i, t in enumerate(["red kettle", "blue kettle", "drill set"])], None)
    out: EncoderOutput = encoder(encoder.preprocess([{"item_id": "x", "title": "zzzz"}, {"item_id": "y", "title": "red"}]))
    lexical, neural = out.pooled.split([512, encoder.neural.dim], dim=-1)
    assert lexical[0].abs().sum() == 0 and torch.allclose(lexical[1].norm(), torch.tensor(1.0))
    assert torch.allclose(neural.norm(dim=-1), torch.ones(2), atol=1e-5)
