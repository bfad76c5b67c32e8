"""Retrieval metrics (bench/metrics/retrieval.py) against independent references.

References: scikit-learn's ndcg_score per query, a plain-Python recall/precision@k and F1,
and a five-item example worked out by hand below.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from bench.metrics.retrieval import THRESHOLD_GRID, choose_threshold, retrieval_metrics


def _cosine(e: np.ndarray) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e @ e.T


def _random_case(seed: int, n: int = 40, dim: int = 6, n_groups: int = 9, unknown: float = 0.1):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, size=n)
    groups[rng.random(n) < unknown] = -1
    return rng.normal(size=(n, dim)).astype(np.float32), groups


def _reference(sims: np.ndarray, groups: np.ndarray, k: int, threshold: float | None = None) -> dict:
    """Query by query, in plain Python: the query itself is never a candidate."""
    n = len(groups)
    ndcg, recall, precision, f1 = [], [], [], []
    for q in range(n):
        others = [j for j in range(n) if j != q]
        relevant = {j for j in others if groups[q] >= 0 and groups[j] == groups[q]}
        if threshold is not None:
            returned = {q} | {j for j in others if sims[q, j] >= threshold}
            target = {q} | relevant
            f1.append(2 * len(returned & target) / (len(returned) + len(target)))
        if not relevant:
            continue
        y_true = np.array([[1.0 if j in relevant else 0.0 for j in others]])
        y_score = np.array([[sims[q, j] for j in others]])
        ndcg.append(ndcg_score(y_true, y_score, k=k))
        top = sorted(others, key=lambda j: -sims[q, j])[:k]
        hits = sum(j in relevant for j in top)
        recall.append(hits / len(relevant))
        precision.append(hits / k)
    out = {f"ndcg@{k}": np.mean(ndcg), f"mar@{k}": np.mean(recall), f"map@{k}": np.mean(precision)}
    if threshold is not None:
        out["f1"] = np.mean(f1)
    return out


@pytest.mark.parametrize("seed,k", [(0, 10), (1, 10), (2, 3), (3, 1), (4, 50)])
def test_metrics_match_sklearn_ndcg_and_brute_force_recall_precision(seed, k):
    emb, groups = _random_case(seed)
    got = retrieval_metrics(torch.from_numpy(emb), groups, k=k, threshold=0.3)
    want = _reference(_cosine(emb), groups, k, threshold=0.3)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_many_items_cross_the_query_block_boundary():
    emb, groups = _random_case(5, n=1100, dim=4, n_groups=300, unknown=0.0)
    got = retrieval_metrics(torch.from_numpy(emb), groups, k=10)
    sims = _cosine(emb)
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    has = same.sum(1) > 0
    hits = np.take_along_axis(same, top, 1).sum(1)
    assert got["mar@10"] == pytest.approx((hits[has] / same.sum(1)[has]).mean(), abs=1e-6)
    assert got["map@10"] == pytest.approx((hits[has] / 10).mean(), abs=1e-6)


# Hand-worked example. Five unit vectors in the plane at these angles, two products:
#   item:   0     1     2      3     4
#   angle:  0°    10°   100°   25°   200°
#   group:  A     A     A      B     B
# Cosines: c(0,1)=cos10=.985, c(0,2)=cos100=-.174, c(0,3)=cos25=.906, c(0,4)=cos200=-.940,
#          c(1,2)=cos90=0, c(1,3)=cos15=.966, c(1,4)=cos190=-.985, c(2,3)=cos75=.259,
#          c(2,4)=cos100=-.174, c(3,4)=cos175=-.996.
# k = 2. Top two per query and hits: q0 -> 1 (A, hit), 3 (B)    hits [1, 0], 2 relevant
#                                    q1 -> 0 (A, hit), 3 (B)    hits [1, 0], 2 relevant
#                                    q2 -> 3 (B), 1 (A, hit)    hits [0, 1], 2 relevant
#                                    q3 -> 1 (A), 0 (A)         hits [0, 0], 1 relevant
#                                    q4 -> 2 (A), 0 (A)         hits [0, 0], 1 relevant
# Ideal DCG with 2 relevant = 1 + 1/log2(3) = 1.63093.
# NDCG: q0 = q1 = 1/1.63093 = .613147, q2 = (1/log2(3))/1.63093 = .386853, q3 = q4 = 0
#   mean = (2 * .613147 + .386853) / 5 = .322629
# Recall@2: .5, .5, .5, 0, 0 -> .3;  Precision@2: hits / 2 -> .5, .5, .5, 0, 0 -> .3
# F1 at threshold .5 (returned set includes the query; target = its group):
#   q0: P={0,1,3} T={0,1,2} -> 2*2/6 = .6667   q1: P={1,0,3} T={0,1,2} -> .6667
#   q2: P={2} T={0,1,2} -> 2/4 = .5            q3: P={3,0,1} T={3,4} -> 2/5 = .4
#   q4: P={4} T={3,4} -> 2/3 = .6667           mean = 2.9 / 5 = .58
# The best grid threshold is .98 (only the .985 pairs pass): q0 .8, q1 .8, q2 .5, q3 2/3, q4 2/3
#   -> mean 3.4333 / 5 = .686667; at .96 q1 also returns 3: q1 .6667, q3 .5 -> .626667.
HAND_ANGLES = [0, 10, 100, 25, 200]
HAND_GROUPS = np.array([0, 0, 0, 1, 1])


def _hand_embeddings() -> torch.Tensor:
    rad = np.deg2rad(HAND_ANGLES)
    return torch.tensor(np.stack([np.cos(rad), np.sin(rad)], 1), dtype=torch.float32)


def test_hand_worked_example():
    got = retrieval_metrics(_hand_embeddings(), HAND_GROUPS, k=2, threshold=0.5)
    assert got["ndcg@2"] == pytest.approx(0.322629, abs=1e-5)
    assert got["mar@2"] == pytest.approx(0.3, abs=1e-6)
    assert got["map@2"] == pytest.approx(0.3, abs=1e-6)
    assert got["f1"] == pytest.approx(0.58, abs=1e-6)
    assert got["f1_threshold"] == 0.5


def test_hand_worked_threshold_choice():
    emb = _hand_embeddings()
    assert choose_threshold(emb, HAND_GROUPS) == pytest.approx(0.98)
    assert retrieval_metrics(emb, HAND_GROUPS, k=2, threshold=0.98)["f1"] == pytest.approx(3.4333333 / 5, abs=1e-6)
    assert retrieval_metrics(emb, HAND_GROUPS, k=2, threshold=0.96)["f1"] == pytest.approx(3.1333333 / 5, abs=1e-6)


def test_f1_at_extreme_thresholds():
    emb, groups = _random_case(7, unknown=0.2)
    n = len(groups)
    n_rel = np.array([((groups == g) & (g >= 0)).sum() - (1 if g >= 0 else 0) for g in groups])
    nothing = retrieval_metrics(torch.from_numpy(emb), groups, threshold=1.5)["f1"]
    assert nothing == pytest.approx(np.mean(2 / (2 + n_rel)), abs=1e-6)  # only the query itself returned
    everything = retrieval_metrics(torch.from_numpy(emb), groups, threshold=-1.5)["f1"]
    assert everything == pytest.approx(np.mean(2 * (n_rel + 1) / (n + n_rel + 1)), abs=1e-6)


def test_choose_threshold_is_the_best_grid_value_on_dev():
    emb, groups = _random_case(8, n=60, n_groups=12)
    emb = torch.from_numpy(emb)
    scores = [retrieval_metrics(emb, groups, threshold=float(t))["f1"] for t in THRESHOLD_GRID]
    chosen = choose_threshold(emb, groups)
    assert chosen in THRESHOLD_GRID
    assert retrieval_metrics(emb, groups, threshold=chosen)["f1"] == pytest.approx(max(scores), abs=1e-9)
    assert max(scores) > min(scores)  # the choice mattered


def test_max_of_kinds_scores_by_the_best_kind():
    rng = np.random.default_rng(9)
    a, groups = _random_case(10)
    b = rng.normal(size=(len(groups), 3)).astype(np.float32)  # kinds may differ in width
    sims = np.maximum(_cosine(a), _cosine(b))
    got = retrieval_metrics({"text": torch.from_numpy(a), "image": torch.from_numpy(b)}, groups, k=5, threshold=0.4)
    want = _reference(sims, groups, 5, threshold=0.4)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
    alone = retrieval_metrics(torch.from_numpy(a), groups, k=5)
    assert retrieval_metrics({"text": torch.from_numpy(a)}, groups, k=5) == pytest.approx(alone)
    assert got["ndcg@5"] != pytest.approx(alone["ndcg@5"])


def test_max_of_kinds_recovers_a_product_only_one_kind_matches():
    # the titles match listings 0 and 1 (cos ~1), the images listings 2 and 3; across the pairs
    # every cosine is .6 and within the other kind's pair it is -.28
    text = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.6, 0.8], [0.6, -0.8]])
    image = torch.tensor([[0.6, 0.8], [0.6, -0.8], [1.0, 0.0], [1.0, 0.01]])
    groups = np.array([0, 0, 1, 1])
    assert retrieval_metrics(text, groups, k=1)["mar@1"] == pytest.approx(0.5)
    assert retrieval_metrics(image, groups, k=1)["mar@1"] == pytest.approx(0.5)
    assert retrieval_metrics({"text": text, "image": image}, groups, k=1)["mar@1"] == pytest.approx(1.0)


def test_perfect_and_unknown_groups():
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.05, 0.99], [-1.0, 0.0]])
    groups = np.array([0, 0, 1, 1, -1])  # the last item's product is unknown: never relevant
    got = retrieval_metrics(emb, groups, k=3, threshold=0.9)
    assert got["ndcg@3"] == pytest.approx(1.0)
    assert got["mar@3"] == pytest.approx(1.0)
    assert got["map@3"] == pytest.approx(1 / 3)
    assert got["f1"] == pytest.approx(1.0)  # 4 queries with their pair, the unknown one alone
    assert retrieval_metrics(emb[:1], groups[:1]) == {}
    assert not math.isnan(got["ndcg@3"])
