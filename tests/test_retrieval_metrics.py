"""Retrieval metrics (bench/metrics/retrieval.py) against independent references.

References: scikit-learn's ndcg_score and average_precision_score per query, a plain per-query
loop for every metric (ranking written out with the documented tie rule), and a five-item
example worked out by hand below.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score

from bench.trial.evaluate import Predictions
from bench.metrics.retrieval import (THRESHOLD_GRID, _ranked, choose_threshold, per_query_metrics, ranking_names,
                                     retrieval_metrics)
from bench.config.schema import TrialConfig
from bench.trial.outputs import prediction_table, retrieval_figures


def _cosine(e: np.ndarray) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e @ e.T


def _random_case(seed: int, n: int = 40, dim: int = 6, n_groups: int = 9, unknown: float = 0.1):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, size=n)
    groups[rng.random(n) < unknown] = -1
    return rng.normal(size=(n, dim)).astype(np.float32), groups


def _tied_case(seed: int, n: int = 40, dim: int = 3, n_groups: int = 8):
    """Every item is +-1 on one axis: cosines are exactly 1, 0 or -1, so nearly every rank is a tie."""
    rng = np.random.default_rng(seed)
    emb = np.zeros((n, dim), dtype=np.float32)
    emb[np.arange(n), rng.integers(0, dim, n)] = rng.choice([-1.0, 1.0], n)
    groups = rng.integers(0, n_groups, size=n)
    groups[rng.random(n) < 0.1] = -1
    return emb, groups


def _reference(sims: np.ndarray, groups: np.ndarray, k: int, threshold: float | None = None) -> dict:
    """Query by query in plain Python: the query is never a candidate; ties put non-matches first."""
    n = len(groups)
    per: dict[str, list[float]] = {m: [] for m in ranking_names(k) + ["f1", "f1_all"]}
    for q in range(n):
        others = [j for j in range(n) if j != q]
        relevant = {j for j in others if groups[q] >= 0 and groups[j] == groups[q]}
        if threshold is not None:
            returned = {j for j in others if sims[q, j] >= threshold}
            if relevant:
                per["f1"].append(2 * len(returned & relevant) / (len(returned) + len(relevant)))
            if groups[q] >= 0:  # Shopee: the query is in its own returned set and its own target
                per["f1_all"].append(2 * (len(returned & relevant) + 1) / (len(returned) + len(relevant) + 2))
        if not relevant:
            continue
        ranking = sorted(others, key=lambda j: (-sims[q, j], j in relevant, j))
        rel = [1.0 if j in relevant else 0.0 for j in ranking]
        top = rel[:k]
        if len(others) > 1:  # sklearn needs two documents; scores from the ranking keep our tie rule
            per[f"ndcg@{k}"].append(ndcg_score([rel], [[-i for i in range(len(rel))]], k=k))
        else:
            per[f"ndcg@{k}"].append(top[0])
        per[f"mar@{k}"].append(sum(top) / len(relevant))
        per[f"p@{k}"].append(sum(top) / k)
        per[f"map@{k}"].append(sum(sum(top[:i + 1]) / (i + 1) for i in range(len(top)) if top[i]) / len(relevant))
        per[f"mrr@{k}"].append(next((1 / (i + 1) for i, r in enumerate(top) if r), 0.0))
        per["recall@1"].append(rel[0])
    out = {m: float(np.mean(v)) for m, v in per.items() if v}
    if threshold is None:
        out = {m: v for m, v in out.items() if not m.startswith("f1")}
    return out


def _assert_matches(got: dict, want: dict):
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("seed,k", [(0, 10), (1, 10), (2, 3), (3, 1), (4, 50)])
def test_every_metric_matches_a_per_query_loop_on_random_cases(seed, k):
    emb, groups = _random_case(seed)
    got = retrieval_metrics(torch.from_numpy(emb), groups, k=k, threshold=0.3)
    _assert_matches(got, _reference(_cosine(emb), groups, k, threshold=0.3))


@pytest.mark.parametrize("seed,k,n", [(10, 10, 40), (11, 5, 40), (12, 1, 40), (13, 60, 40), (14, 10, 120)])
def test_ties_in_similarity_rank_non_matches_first(seed, k, n):
    emb, groups = _tied_case(seed, n=n)
    sims = _cosine(emb)
    assert len(np.unique(np.round(sims, 6))) <= 3  # the case really is ties everywhere
    got = retrieval_metrics(torch.from_numpy(emb), groups, k=k, threshold=0.5)
    _assert_matches(got, _reference(sims, groups, k, threshold=0.5))


@pytest.mark.parametrize("depth", [1, 10, 40])
def test_ranking_order_against_lexsort_with_ties_inside_and_across_the_candidates(depth):
    # similarities on 0.01 steps (ties near every rank), some rows constant (ties run past any cut),
    # -0.0 beside 0.0; the order must be: similarity, then non-matches, then item index
    rng = np.random.default_rng(depth)
    sims = np.round(rng.uniform(-1, 1, size=(60, 300)), 2).astype(np.float32)
    sims[::7] = 0.25
    sims[3, :150] = -0.0
    sims[3, 150:] = 0.0
    same = rng.random((60, 300)) < 0.2
    got = _ranked(torch.from_numpy(sims), torch.from_numpy(same), depth).numpy()
    idx = np.arange(300)
    for q in range(60):
        want = np.lexsort((idx, same[q], -sims[q].astype(np.float64)))[:depth]
        assert got[q].tolist() == want.tolist(), q


def test_a_collapsed_embedding_scores_nothing_whatever_the_item_order():
    # every item the same vector: items of a product stored next to each other must not help
    groups = np.repeat(np.arange(10), 3)
    got = retrieval_metrics(torch.ones(30, 4), groups, k=2)
    assert got["mar@2"] == 0 and got["mrr@2"] == 0 and got["recall@1"] == 0 and got["ndcg@2"] == 0


def test_ndcg_matches_sklearn_on_raw_scores_without_ties():
    emb, groups = _random_case(20, n=50)
    sims = _cosine(emb)
    per = per_query_metrics(torch.from_numpy(emb), groups, k=7)
    for q in range(len(groups)):
        others = [j for j in range(len(groups)) if j != q]
        y_true = np.array([[float(groups[q] >= 0 and groups[j] == groups[q]) for j in others]])
        if y_true.sum() == 0:
            assert math.isnan(per["ndcg@7"][q])
            continue
        assert per["ndcg@7"][q] == pytest.approx(ndcg_score(y_true, sims[q, others][None], k=7), abs=1e-9)


def test_map_at_k_beyond_every_ranking_is_sklearn_average_precision():
    # with k >= n - 1 nothing is cut off and AP@k (normalised by R) is the full average precision
    emb, groups = _random_case(21, n=30, n_groups=6)
    sims = _cosine(emb)
    per = per_query_metrics(torch.from_numpy(emb), groups, k=100)
    checked = 0
    for q in range(len(groups)):
        others = [j for j in range(len(groups)) if j != q]
        y_true = [int(groups[q] >= 0 and groups[j] == groups[q]) for j in others]
        if not any(y_true):
            continue
        assert per["map@100"][q] == pytest.approx(average_precision_score(y_true, sims[q, others]), abs=1e-9)
        checked += 1
    assert checked > 20


def test_map_at_k_is_normalised_by_all_matches_not_by_k():
    # one query, 4 matches, k = 2, both top items matches: AP@2 = (1 + 1) / 4, not (1 + 1) / 2
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, 0.02], [1.0, 0.5], [1.0, 0.6]])
    per = per_query_metrics(emb, np.array([0, 0, 0, 0, 0]), k=2)
    assert per["map@2"][0] == pytest.approx(0.5)
    assert per["p@2"][0] == 1.0 and per["mar@2"][0] == 0.5


def test_k_larger_than_the_number_of_items():
    emb, groups = _random_case(22, n=6, n_groups=2, unknown=0.0)
    got = retrieval_metrics(torch.from_numpy(emb), groups, k=10, threshold=0.0)
    _assert_matches(got, _reference(_cosine(emb), groups, 10, threshold=0.0))
    assert got["mar@10"] == 1.0  # every match is within reach
    assert got["p@10"] < 0.5  # precision still divides by k (at most 5 other items)


def test_many_items_cross_the_query_block_boundary():
    emb, groups = _random_case(5, n=1100, dim=4, n_groups=300, unknown=0.05)
    got = retrieval_metrics(torch.from_numpy(emb), groups, k=10, threshold=0.9)
    sims = _cosine(emb)
    np.fill_diagonal(sims, -np.inf)
    same = (groups[:, None] == groups[None, :]) & (groups[:, None] >= 0)
    np.fill_diagonal(same, False)
    n_rel = same.sum(1)
    has = n_rel > 0
    # numpy per-query reference: lexsort (last key first) = by -similarity, then non-matches, then index
    idx = np.arange(len(groups))
    order = np.stack([np.lexsort((idx, same[q], -sims[q]))[:10] for q in range(len(groups))])
    hits = np.take_along_axis(same, order, 1).astype(float)
    found = hits.sum(1)
    ap = (hits * hits.cumsum(1) / np.arange(1, 11)).sum(1) / np.maximum(n_rel, 1)
    rr = np.where(found > 0, 1 / (hits.argmax(1) + 1), 0)
    returned = sims >= np.float32(0.9)
    tp = (returned & same).sum(1)
    want = {"mar@10": (found / np.maximum(n_rel, 1))[has].mean(), "p@10": (found / 10)[has].mean(),
            "map@10": ap[has].mean(), "mrr@10": rr[has].mean(), "recall@1": hits[has, 0].mean(),
            "f1": (2 * tp / (returned.sum(1) + n_rel))[has].mean(),
            "f1_all": (2 * (tp + 1) / (returned.sum(1) + n_rel + 2))[groups >= 0].mean()}
    _assert_matches(got, want)
    assert (~has[:1024]).sum() > 50 and (~has[1024:]).any()  # queries without a match in both blocks


def test_queries_without_a_match_are_left_out_of_ranking_metrics_and_f1_not_f1_all():
    emb, groups = _random_case(23, n=30, n_groups=20)
    per = per_query_metrics(torch.from_numpy(emb), groups, k=5, threshold=0.4)
    n_rel = np.array([((groups == g) & (g >= 0)).sum() - 1 if g >= 0 else 0 for g in groups])
    for name in ranking_names(5) + ["f1"]:
        assert np.isnan(per[name]).tolist() == (n_rel == 0).tolist(), name
    assert np.isnan(per["f1_all"]).tolist() == (groups < 0).tolist()
    single = (n_rel == 0) & (groups >= 0)
    assert single.any() and np.isfinite(per["f1_all"][single]).all()


# Hand-worked example. Five unit vectors in the plane at these angles, two products:
#   item:   0     1     2      3     4
#   angle:  0°    10°   100°   25°   200°
#   group:  A     A     A      B     B
# Cosines: c(0,1)=cos10=.985, c(0,2)=cos100=-.174, c(0,3)=cos25=.906, c(0,4)=cos200=-.940,
#          c(1,2)=cos90=0, c(1,3)=cos15=.966, c(1,4)=cos190=-.985, c(2,3)=cos75=.259,
#          c(2,4)=cos100=-.174, c(3,4)=cos175=-.996.
# k = 2. Top two per query and hits: q0 -> 1 (A, hit), 3 (B)    hits [1, 0], R = 2
#                                    q1 -> 0 (A, hit), 3 (B)    hits [1, 0], R = 2
#                                    q2 -> 3 (B), 1 (A, hit)    hits [0, 1], R = 2
#                                    q3 -> 1 (A), 0 (A)         hits [0, 0], R = 1
#                                    q4 -> 2 (A), 0 (A)         hits [0, 0], R = 1
# Ideal DCG with 2 relevant = 1 + 1/log2(3) = 1.63093.
# NDCG: q0 = q1 = 1/1.63093 = .613147, q2 = (1/log2(3))/1.63093 = .386853, q3 = q4 = 0
#   mean = (2 * .613147 + .386853) / 5 = .322629
# Recall@2: .5, .5, .5, 0, 0 -> .3;  P@2: hits / 2 -> .5, .5, .5, 0, 0 -> .3
# AP@2 = sum P@i * rel_i / R: q0 = (1/1) / 2 = .5, q1 = .5, q2 = (1/2) / 2 = .25, q3 = q4 = 0 -> .25
# RR@2: 1, 1, 1/2, 0, 0 -> .5;  recall@1 (top item a match): 1, 1, 0, 0, 0 -> .4
# At threshold .5 the returned sets (the query itself not included) are
#   q0 {1,3}, q1 {0,3}, q2 {}, q3 {0,1}, q4 {}
# f1 = 2 |returned & matches| / (|returned| + R):
#   q0: matches {1,2} -> 2*1/4 = .5   q1: {0,2} -> .5   q2: {0,1}, nothing returned -> 0
#   q3: {4} -> 0                      q4: {3} -> 0      mean = 1 / 5 = .2
# f1_all (Shopee: the query added to both sets):
#   q0: P={0,1,3} T={0,1,2} -> 2*2/6 = .6667   q1: P={1,0,3} T={0,1,2} -> .6667
#   q2: P={2} T={0,1,2} -> 2/4 = .5            q3: P={3,0,1} T={3,4} -> 2/5 = .4
#   q4: P={4} T={3,4} -> 2/3 = .6667           mean = 2.9 / 5 = .58
# Threshold choice by f1. At -.2 (the grid's lowest value) every pair above -.2 is returned:
#   q0 {1,3,2} -> 2*2/5 = .8, q1 {0,3,2} -> .8, q2 {3,1,0,4} -> 2*2/6 = .6667, q3 {1,0,2} -> 0,
#   q4 {2} -> 0: mean 2.2667 / 5 = .453333; -.18 returns the same sets (a tie; the lowest wins).
#   At -.16 the pairs at -.174 drop out: q0 .5, q1 .8, q2 {3,1} -> .5, q3 0, q4 0 -> .36;
#   at .98 only the .985 pair is returned: q0 = q1 = 2/3, the rest 0 -> .266667. Best: -.2.
# (f1_all would have picked .98, where q0 .8, q1 .8, q2 .5, q3 2/3, q4 2/3 -> .686667.)
HAND_ANGLES = [0, 10, 100, 25, 200]
HAND_GROUPS = np.array([0, 0, 0, 1, 1])


def _hand_embeddings() -> torch.Tensor:
    rad = np.deg2rad(HAND_ANGLES)
    return torch.tensor(np.stack([np.cos(rad), np.sin(rad)], 1), dtype=torch.float32)


def test_hand_worked_example():
    got = retrieval_metrics(_hand_embeddings(), HAND_GROUPS, k=2, threshold=0.5)
    assert got["ndcg@2"] == pytest.approx(0.322629, abs=1e-5)
    assert got["mar@2"] == pytest.approx(0.3, abs=1e-9)
    assert got["p@2"] == pytest.approx(0.3, abs=1e-9)
    assert got["map@2"] == pytest.approx(0.25, abs=1e-9)
    assert got["mrr@2"] == pytest.approx(0.5, abs=1e-9)
    assert got["recall@1"] == pytest.approx(0.4, abs=1e-9)
    assert got["f1"] == pytest.approx(0.2, abs=1e-9)
    assert got["f1_all"] == pytest.approx(0.58, abs=1e-9)
    assert got["f1_threshold"] == 0.5


def test_hand_worked_threshold_choice():
    emb = _hand_embeddings()
    assert choose_threshold(emb, HAND_GROUPS) == pytest.approx(-0.2)
    assert retrieval_metrics(emb, HAND_GROUPS, k=2, threshold=-0.2)["f1"] == pytest.approx(2.2666667 / 5, abs=1e-6)
    assert retrieval_metrics(emb, HAND_GROUPS, k=2, threshold=-0.18)["f1"] == pytest.approx(2.2666667 / 5, abs=1e-6)
    assert retrieval_metrics(emb, HAND_GROUPS, k=2, threshold=-0.16)["f1"] == pytest.approx(0.36, abs=1e-6)
    at_98 = retrieval_metrics(emb, HAND_GROUPS, k=2, threshold=0.98)
    assert at_98["f1"] == pytest.approx(1.3333333 / 5, abs=1e-6)
    assert at_98["f1_all"] == pytest.approx(3.4333333 / 5, abs=1e-6)


def test_f1_at_extreme_thresholds():
    emb, groups = _random_case(7, unknown=0.2)
    n = len(groups)
    n_rel = np.array([((groups == g) & (g >= 0)).sum() - (1 if g >= 0 else 0) for g in groups])
    has, known = n_rel > 0, groups >= 0
    nothing = retrieval_metrics(torch.from_numpy(emb), groups, threshold=1.5)
    assert nothing["f1"] == 0.0  # nothing returned: no query with a match is answered
    assert nothing["f1_all"] == pytest.approx(np.mean((2 / (2 + n_rel))[known]), abs=1e-9)  # only the query itself
    everything = retrieval_metrics(torch.from_numpy(emb), groups, threshold=-1.5)
    assert everything["f1"] == pytest.approx(np.mean((2 * n_rel / (n - 1 + n_rel))[has]), abs=1e-9)
    assert everything["f1_all"] == pytest.approx(np.mean((2 * (n_rel + 1) / (n + n_rel + 1))[known]), abs=1e-9)


def test_choose_threshold_is_the_best_grid_value_on_dev():
    emb, groups = _random_case(8, n=60, n_groups=12)
    emb = torch.from_numpy(emb)
    scores = [retrieval_metrics(emb, groups, threshold=float(t))["f1"] for t in THRESHOLD_GRID]
    chosen = choose_threshold(emb, groups)
    assert chosen in THRESHOLD_GRID
    assert chosen == THRESHOLD_GRID[int(np.argmax(scores))]
    assert retrieval_metrics(emb, groups, threshold=chosen)["f1"] == pytest.approx(max(scores), abs=1e-9)
    assert max(scores) > min(scores)  # the choice mattered


def test_no_threshold_without_two_items_or_without_a_match():
    emb, _ = _random_case(9, n=10)
    assert choose_threshold(torch.from_numpy(emb[:1]), np.array([0])) is None
    assert choose_threshold(torch.from_numpy(emb), np.arange(10)) is None  # every product a single item
    assert choose_threshold(torch.from_numpy(emb), np.full(10, -1)) is None  # no product known


def _singletons_case(n_single: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """40 products of two noisy listings each, plus ``n_single`` products with one listing.

    The pairs live in the first 8 dimensions, the single listings in the other 8, so no single
    listing is ever similar to a pair's listing: only the share of single listings changes.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 8))
    pairs = np.repeat(centres, 2, axis=0) + 0.6 * rng.normal(size=(80, 8))
    emb = np.zeros((80 + n_single, 16))
    emb[:80, :8] = pairs
    emb[80:, 8:] = rng.normal(size=(n_single, 8))
    groups = np.r_[np.repeat(np.arange(40), 2), 40 + np.arange(n_single)]
    return torch.tensor(emb, dtype=torch.float32), groups


def _old_f1_curve(emb: torch.Tensor, groups: np.ndarray) -> np.ndarray:
    """The previous definition at every grid threshold, in numpy: the Shopee F1 over all queries
    (the query in its own returned set and target), which also chose the threshold."""
    sims = _cosine(emb.numpy().astype(np.float64))
    np.fill_diagonal(sims, -np.inf)
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    curve = []
    for t in THRESHOLD_GRID:
        returned = sims >= t
        curve.append(np.mean(2 * ((returned & same).sum(1) + 1) / (returned.sum(1) + same.sum(1) + 2)))
    return np.array(curve)


def test_f1_does_not_rise_with_the_share_of_single_listing_products():
    old, old_thresholds, new, new_thresholds, f1_all = [], [], [], [], []
    for n_single in (0, 80, 320):
        emb, groups = _singletons_case(n_single)
        curve = _old_f1_curve(emb, groups)
        old.append(curve.max())
        old_thresholds.append(THRESHOLD_GRID[int(np.argmax(curve))])
        t = choose_threshold(emb, groups)
        new.append(retrieval_metrics(emb, groups, threshold=t)["f1"])
        new_thresholds.append(t)
        f1_all.append(retrieval_metrics(emb, groups, threshold=float(old_thresholds[-1]))["f1_all"])
    # the old figure climbed with single listings alone (answered with nothing, one scores 1),
    # and its threshold crept up towards 1
    assert old[0] + 0.1 < old[1] < old[2]
    assert old_thresholds[0] < old_thresholds[2]
    # f1 scores queries that have a match: the same products, the same threshold, the same figure
    assert new[0] == new[1] == new[2] and new_thresholds[0] == new_thresholds[1] == new_thresholds[2]
    assert 0.2 < new[0] < 0.95
    # f1_all is the old definition (no unknown products here), reported beside f1, never used for the choice
    assert f1_all == pytest.approx(old, abs=1e-9)


def test_f1_only_falls_when_single_listings_are_distractors():
    # single listings in the pairs' own space can be returned by mistake: f1 can only drop
    rng = np.random.default_rng(3)
    emb, groups = _singletons_case(0)
    values = []
    for n_single in (0, 40, 160):
        extra = torch.tensor(rng.normal(size=(n_single, 16)), dtype=torch.float32)
        e, g = torch.cat([emb, extra]), np.r_[groups, 1000 + np.arange(n_single)]
        values.append(retrieval_metrics(e, g, threshold=choose_threshold(e, g))["f1"])
    assert values[0] >= values[1] >= values[2]


def test_max_of_kinds_scores_by_the_best_kind():
    rng = np.random.default_rng(9)
    a, groups = _random_case(10)
    b = rng.normal(size=(len(groups), 3)).astype(np.float32)  # kinds may differ in width
    sims = np.maximum(_cosine(a), _cosine(b))
    got = retrieval_metrics({"text": torch.from_numpy(a), "image": torch.from_numpy(b)}, groups, k=5, threshold=0.4)
    _assert_matches(got, _reference(sims, groups, 5, threshold=0.4))
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
    groups = np.array([0, 0, 1, 1, -1])  # the last item's product is unknown: never relevant, never scored
    got = retrieval_metrics(emb, groups, k=3, threshold=0.9)
    for name in ("ndcg@3", "mar@3", "map@3", "mrr@3", "recall@1", "f1", "f1_all"):
        assert got[name] == pytest.approx(1.0), name
    assert got["p@3"] == pytest.approx(1 / 3)
    assert all(v is None for v in retrieval_metrics(emb[:1], groups[:1]).values())
    assert not math.isnan(got["ndcg@3"])


# The trial's side: a threshold chosen on dev or null with a note, per-query values stored.

def _config(k: int = 3) -> TrialConfig:
    return TrialConfig.model_validate({"dataset": "synthetic_catalog", "task": "matching",
                                       "encoders": {"text": "hf_text"}, "fusion": "text_only",
                                       "eval": {"k": k, "retrieval": "embedding"}})


def _predictions(emb: np.ndarray, groups: np.ndarray) -> Predictions:
    n = len(groups)
    return Predictions([f"item{i}" for i in range(n)], torch.full((n,), -1), torch.as_tensor(groups),
                       torch.as_tensor(emb), None)


def test_trial_row_chooses_the_threshold_on_dev_and_stores_per_query_values():
    dev_emb, dev_groups = _random_case(30, n=40)
    test_emb, test_groups = _random_case(31, n=50)
    cfg = _config()
    test = _predictions(test_emb, test_groups)
    row, per_query = retrieval_figures(cfg, _predictions(dev_emb, dev_groups), test)
    threshold = choose_threshold(torch.from_numpy(dev_emb), dev_groups)
    assert row["f1_threshold"] == threshold and "f1_note" not in row
    _assert_matches(row, _reference(_cosine(test_emb), test_groups, 3, threshold=threshold))
    table = prediction_table(test, [], "t", per_query=per_query)
    assert table["item_id"].to_list() == test.item_ids
    for name in ranking_names(3) + ["f1", "f1_all"]:
        assert table[name].dtype == pl.Float64
        assert table[name].mean() == pytest.approx(row[name], abs=1e-12), name  # nulls left out, as in the row
    assert table["f1"].null_count() > 0 and table["f1"].is_nan().sum() == 0


@pytest.mark.parametrize("dev,why", [(None, "no dev split"), ((1, [0]), "1 item"),
                                     ((6, [0, 1, 2, 3, 4, 5]), "no dev item has another item")])
def test_no_threshold_means_null_f1_and_a_note_never_a_default(dev, why):
    test_emb, test_groups = _random_case(32, n=30)
    dev_p = None if dev is None else _predictions(_random_case(33, n=dev[0])[0], np.array(dev[1]))
    cfg = _config()
    test = _predictions(test_emb, test_groups)
    row, per_query = retrieval_figures(cfg, dev_p, test)
    assert row["f1"] is None and row["f1_all"] is None and row["f1_threshold"] is None
    assert why in row["f1_note"]
    assert row["mar@3"] is not None  # the ranking metrics need no threshold
    table = prediction_table(test, [], "t", per_query=per_query)
    assert "f1" not in table.columns and "mar@3" in table.columns


def test_rows_stored_under_the_old_names_are_read_with_todays_meanings():
    from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table
    from bench.metrics.retrieval_columns import LEGACY_F1_NOTE, upgrade_legacy_rows

    old = {"trial_key": "old", "method": "a", "status": "ok", "ndcg@10": 0.7, "mar@10": 0.6, "map@10": 0.3,
           "f1": 0.9, "f1_threshold": 0.96}
    new = {"trial_key": "new", "method": "a", "status": "ok", "ndcg@10": 0.7, "mar@10": 0.6, "p@10": 0.2,
           "map@10": 0.5, "mrr@10": 0.6, "recall@1": 0.5, "f1": 0.4, "f1_all": 0.8, "f1_threshold": 0.5}
    unmeasured = {**new, "trial_key": "none", "f1": None, "f1_all": None, "f1_threshold": None, "f1_note": "no dev split"}
    rows = pl.DataFrame([old, new, unmeasured], infer_schema_length=None)
    up = {r["trial_key"]: r for r in upgrade_legacy_rows(rows).iter_rows(named=True)}
    assert up["old"]["p@10"] == 0.3 and up["old"]["map@10"] is None  # old map@10 was precision@10
    assert up["old"]["f1"] is None and up["old"]["f1_threshold"] is None and up["old"]["f1_note"] == LEGACY_F1_NOTE
    assert up["new"] == {**new, "f1_note": None}
    assert up["none"]["f1_note"] == "no dev split"
    assert upgrade_legacy_rows(pl.DataFrame({"trial_key": ["c"], "accuracy": [0.5]})).columns == ["trial_key", "accuracy"]
    table = leaderboard_table(rows, LeaderboardSpec(group_by=["method"]))
    assert table["p@10"][0] == pytest.approx((0.3 + 0.2 + 0.2) / 3)
    assert table["map@10"][0] == pytest.approx(0.5) and table["f1"][0] == pytest.approx(0.4)


def test_a_real_matching_trial_stores_per_query_values_that_give_its_row(registry):
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialSpec
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial
    from conftest import tiny_trial

    stage = {"objectives": [{"name": "triplet", "options": {"margin": 1.0}}], "epochs": 1, "batch_size": 16,
             "pk_items": 2, "optimizer": {"lr": 1e-3}}
    cfg = tiny_trial(task="matching", stages=[stage], eval={"k": 5, "retrieval": "embedding"})
    outcome = run_trial(TrialSpec(trial_key(cfg), {}, {}, cfg), TrialContext(registry=registry))
    row, table = outcome.row, outcome.predictions
    assert row["status"] == "ok", row["error"]
    assert row["f1_threshold"] in THRESHOLD_GRID and "f1_note" not in row
    assert table.height == row["n_test"]
    for name in ranking_names(5) + ["f1", "f1_all"]:
        assert table[name].mean() == pytest.approx(row[name], abs=1e-12), name


def test_cosines_equal_but_for_float32_noise_are_ties_in_the_ranking():
    """The query's match sits 1.8e-7 above a non-match in float32 cosine: a tie, so the non-match ranks first."""
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 6e-4]])  # query, its match (cos 1), a non-match (cos 0.99999982)
    from bench.metrics.retrieval import similarity_blocks

    raw = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T
    assert raw[0, 1] > raw[0, 2]  # without the tie rule the match would be first
    (_, sims), = similarity_blocks(emb)
    assert sims[0, 1] == sims[0, 2]
    got = per_query_metrics(emb, np.array([0, 0, 1]), k=1)
    assert got["recall@1"][0] == 0.0 and got["mrr@1"][0] == 0.0
