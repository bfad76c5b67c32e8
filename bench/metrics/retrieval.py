"""Retrieval metrics for product matching: each item queries all the others by cosine similarity.

- ndcg@k: binary relevance (same group), averaged over queries with at least one match.
- mar@k / map@k: recall@k and precision@k, macro-averaged over queries with at least one match.
- f1: the set returned above a similarity threshold (the query itself included, as in the
  Shopee metric), F1 against the query's group, averaged over all queries; the threshold is
  chosen on dev with ``choose_threshold`` and only applied on test.
Scores of several embedding kinds combine by their maximum (VT-BERT's retrieval score).
Similarities are computed in blocks of queries, so memory stays O(block x n).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THRESHOLD_GRID = np.round(np.arange(-0.2, 1.0001, 0.02), 4)


def _normalised(embeddings: torch.Tensor | dict[str, torch.Tensor]) -> list[torch.Tensor]:
    kinds = embeddings.values() if isinstance(embeddings, dict) else [embeddings]
    return [F.normalize(e.float(), dim=-1) for e in kinds]


def similarity_blocks(embeddings, block: int = 1024):
    """Yield (start, sims[b, n]) with the max over embedding kinds of cosine similarity."""
    kinds = _normalised(embeddings)
    n = kinds[0].shape[0]
    for start in range(0, n, block):
        sims = None
        for e in kinds:
            s = e[start:start + block] @ e.T
            sims = s if sims is None else torch.maximum(sims, s)
        yield start, sims


def query_blocks(embeddings, groups: torch.Tensor):
    """Yield (sims, same) per block of queries, the query itself excluded from both:
    sims[b, n] with -inf on the query's own column, same[b, n] = same known group."""
    for start, sims in similarity_blocks(embeddings):
        rows = torch.arange(sims.shape[0])
        qgroups = groups[start:start + sims.shape[0]]
        same = (qgroups[:, None] == groups[None, :]) & (qgroups[:, None] >= 0)
        same[rows, rows + start] = False
        sims = sims.clone()
        sims[rows, rows + start] = float("-inf")
        yield sims, same


def _f1(returned: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Per-query F1 of the returned set; the query itself counts as returned and relevant."""
    tp = (returned & same).sum(1).double() + 1.0
    return 2 * tp / (returned.sum(1).double() + 1.0 + same.sum(1).double() + 1.0)


def retrieval_metrics(embeddings, groups: np.ndarray | torch.Tensor, k: int = 10,
                      threshold: float | None = None) -> dict[str, float]:
    groups = torch.as_tensor(np.asarray(groups))
    n = len(groups)
    if n < 2:
        return {}
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    ndcg, recall, precision, f1 = [], [], [], []
    for masked, same in query_blocks(embeddings, groups):
        n_rel = same.sum(1)
        kk = min(k, n - 1)
        top = masked.topk(kk, dim=1).indices
        hits = same.gather(1, top).double()
        dcg = (hits * discounts[:kk]).sum(1)
        ideal = torch.stack([discounts[:min(int(r), kk)].sum() for r in n_rel])
        has = n_rel > 0
        ndcg.append((dcg[has] / ideal[has]))
        recall.append(hits.sum(1)[has] / n_rel[has].double())
        precision.append(hits.sum(1)[has] / k)
        if threshold is not None:
            f1.append(_f1(masked >= threshold, same))
    out = {}
    if sum(len(x) for x in ndcg):
        out[f"ndcg@{k}"] = float(torch.cat(ndcg).mean())
        out[f"mar@{k}"] = float(torch.cat(recall).mean())
        out[f"map@{k}"] = float(torch.cat(precision).mean())
    if f1:
        out["f1"] = float(torch.cat(f1).mean())
        out["f1_threshold"] = float(threshold)
    return out


def choose_threshold(embeddings, groups: np.ndarray | torch.Tensor, grid=THRESHOLD_GRID) -> float:
    """The similarity threshold with the best mean F1 (use on dev only)."""
    groups = torch.as_tensor(np.asarray(groups))
    n = len(groups)
    grid_t = torch.tensor(grid, dtype=torch.float32)
    f1_sum = torch.zeros(len(grid), dtype=torch.float64)
    for sims, same in query_blocks(embeddings, groups):
        for i, t in enumerate(grid_t):
            f1_sum[i] += _f1(sims >= t, same).sum()
    return float(grid[int(torch.argmax(f1_sum))]) if n else 0.5
