"""Retrieval metrics for product matching: each item queries all the others by cosine similarity.

A query's *matches* are the other items of its product (same known group; an item whose group
is unknown matches nothing and is never a match). R is the number of a query's matches. The
ranking of a query holds every other item by descending similarity; among equally similar
items the non-matches come first, then lower item positions (ties never flatter a model, and a
collapsed embedding cannot score by the order items happen to be stored in). k is
``eval.k`` (10 by default); names follow it.

Ranking metrics, each the mean over queries with R >= 1 (queries without a match are left out:
nothing can be found for them). With rel_i = 1 when rank i is a match:

- ``ndcg@k``: sum_{i<=k} rel_i / log2(i + 1), divided by the same sum for the ideal ranking
  (min(R, k) matches on top).
- ``mar@k``: recall@k, (number of matches in the top k) / R.
- ``p@k``: precision@k, (number of matches in the top k) / k, with k fixed even when fewer
  than k other items exist (trec_eval's P_k). VT-BERT reports this figure as "MAP@10".
- ``map@k``: average precision at k, AP@k = sum_{i<=k} P@i * rel_i / R with P@i the
  precision of the top i -- normalised by R, as trec_eval's ``map_cut`` (which MTEB uses)
  does, so a query with R > k cannot reach 1. Where R <= k this equals the
  sum / min(k, R) form.
- ``mrr@k``: 1 / (rank of the first match) if a match is in the top k, else 0.
- ``recall@1``: 1 when the most similar other item is a match, else 0 (the "Recall@1" of
  metric learning; equal to precision@1).

Threshold F1 at a similarity threshold t chosen on dev (``choose_threshold``), applied on test.
The returned set of a query is every other item with similarity >= t.

- ``f1``: 2 |returned & matches| / (|returned| + R) per query, the mean over queries with
  R >= 1 (0 for such a query when nothing is returned). This is what picks t on dev.
- ``f1_all``: the Shopee competition definition: the query itself counts as returned and as
  its own match, 2 (|returned & matches| + 1) / (|returned| + 1 + R + 1), the mean over every
  query with a known group, products with a single item included (such a query scores 1 when
  nothing is returned, so this figure rises with the share of single-item products).

Scores of several embedding kinds combine by their maximum (VT-BERT's retrieval score), rounded
to 1e-6 before ranking (``bench.metrics.ties``: float32 noise is a tie, not an order).
Similarities are computed in blocks of queries, so memory stays O(block x n).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.metrics.retrieval_columns import PER_QUERY, ranking_names  # noqa: F401  (names live there, torch-free)
from bench.metrics.ties import tie_rounded_tensor

THRESHOLD_GRID = np.round(np.arange(-0.2, 1.0001, 0.02), 4)
BLOCK = 1024
_BLOCK_ELEMENTS = 1 << 24  # a block's similarity matrix is sorted whole: cap its size for large n

def _normalised(embeddings: torch.Tensor | dict[str, torch.Tensor]) -> list[torch.Tensor]:
    kinds = embeddings.values() if isinstance(embeddings, dict) else [embeddings]
    return [F.normalize(e.float(), dim=-1) for e in kinds]


def similarity_blocks(embeddings, block: int = BLOCK):
    """Yield (start, sims[b, n]) with the max over embedding kinds of cosine similarity, rounded to
    1e-6 (``bench.metrics.ties``: cosines equal but for float32 noise are ties in every ranking)."""
    kinds = _normalised(embeddings)
    n = kinds[0].shape[0]
    for start in range(0, n, block):
        sims = None
        for e in kinds:
            s = e[start:start + block] @ e.T
            sims = s if sims is None else torch.maximum(sims, s)
        yield start, tie_rounded_tensor(sims)


def query_blocks(embeddings, groups: torch.Tensor, block: int = BLOCK):
    """Yield (start, sims, same) per block of queries, the query itself excluded from both:
    sims[b, n] with -inf on the query's own column, same[b, n] = same known group."""
    block = max(1, min(block, _BLOCK_ELEMENTS // max(len(groups), 1)))
    for start, sims in similarity_blocks(embeddings, block):
        rows = torch.arange(sims.shape[0])
        qgroups = groups[start:start + sims.shape[0]]
        same = (qgroups[:, None] == groups[None, :]) & (qgroups[:, None] >= 0)
        same[rows, rows + start] = False
        sims = sims.clone()
        sims[rows, rows + start] = float("-inf")
        yield start, sims, same


def _order_key(sims: torch.Tensor, non_match: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """An exact int64 key whose descending order is the ranking: the float32 similarity mapped to an
    order-preserving int32 (high bits), then "is a non-match", then the reversed item index."""
    bits = (sims.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0: equal floats, equal keys
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * 2**32 + non_match.to(torch.int64) * 2**31 + (2**31 - 1 - columns)


def _ranked(sims: torch.Tensor, same: torch.Tensor, depth: int, spare: int = 32) -> torch.Tensor:
    """Column indices of the top ``depth`` per row: by similarity, ties non-matches first, then by index.

    The key is built only for the ``depth + spare`` most similar items of a row, which hold the whole
    top ``depth`` unless ties at the cut run past them; such rows are ranked on all items.
    """
    n = sims.shape[1]
    m = min(n, depth + spare)
    values, candidates = sims.topk(m, dim=1)
    key = _order_key(values, ~same.gather(1, candidates), candidates)
    out = candidates.gather(1, key.topk(depth, dim=1).indices)
    unsure = values[:, -1] >= values[:, depth - 1] if m < n else torch.zeros(len(sims), dtype=torch.bool)
    if unsure.any():
        rows = unsure.nonzero().squeeze(1)
        full = _order_key(sims[rows], ~same[rows], torch.arange(n, dtype=torch.int64))
        out[rows] = full.topk(depth, dim=1).indices
    return out


def _f1(tp: torch.Tensor, n_returned: torch.Tensor, n_rel: torch.Tensor, with_self: bool) -> torch.Tensor:
    """F1 from counts: returned matches, returned items, matches (the query added to each if ``with_self``)."""
    extra = 1.0 if with_self else 0.0
    return 2 * (tp.double() + extra) / (n_returned.double() + extra + n_rel.double() + extra)


def _threshold_counts(sims: torch.Tensor, same: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(returned items, returned matches) per query and grid threshold, [b, len(grid)], in one pass.

    Each similarity falls into the bin of the grid values it reaches; the counts at threshold j
    are the counts of the bins above j (the same float32 comparison as ``sims >= grid[j]``).
    """
    b, g = sims.shape[0], len(grid)
    reached = torch.bucketize(sims, grid, right=True)  # number of grid values <= each similarity
    flat = (torch.arange(b)[:, None] * (g + 1) + reached).flatten()
    per_bin = torch.bincount(flat, minlength=b * (g + 1)).view(b, g + 1)
    match_bin = torch.bincount(flat[same.flatten()], minlength=b * (g + 1)).view(b, g + 1)
    above = lambda counts: counts.flip(1).cumsum(1).flip(1)[:, 1:]  # noqa: E731  bins j+1.. reach grid[j]
    return above(per_bin), above(match_bin)


def per_query_metrics(embeddings, groups: np.ndarray | torch.Tensor, k: int = 10,
                      threshold: float | None = None) -> dict[str, np.ndarray]:
    """Every query's value of every metric, in item order; NaN where the query is left out.

    Ranking metrics and ``f1`` are NaN for queries without a match; ``f1_all`` is NaN only for
    queries whose group is unknown. ``f1``/``f1_all`` are there only with a threshold.
    """
    groups = torch.as_tensor(np.asarray(groups))
    n = len(groups)
    names = ranking_names(k) + (["f1", "f1_all"] if threshold is not None else [])
    out = {name: np.full(n, np.nan) for name in names}
    if n < 2:
        return out
    depth = min(k, n - 1)
    discounts = 1.0 / torch.log2(torch.arange(2, depth + 2, dtype=torch.float64))
    ideal = discounts.cumsum(0)
    ranks = torch.arange(1, depth + 1, dtype=torch.float64)
    for start, sims, same in query_blocks(embeddings, groups):
        stop = start + sims.shape[0]
        n_rel = torch.count_nonzero(same, dim=1)
        has = (n_rel > 0).numpy()
        r = n_rel.double().clamp(min=1)
        hits = same.gather(1, _ranked(sims, same, depth)).double()
        found = hits.sum(1)
        first = hits.argmax(1).double() + 1
        values = {
            f"ndcg@{k}": (hits * discounts).sum(1) / ideal[(n_rel.clamp(1, depth) - 1)],
            f"mar@{k}": found / r,
            f"p@{k}": found / k,
            f"map@{k}": (hits * hits.cumsum(1) / ranks).sum(1) / r,
            f"mrr@{k}": torch.where(found > 0, 1.0 / first, torch.zeros_like(first)),
            "recall@1": hits[:, 0],
        }
        if threshold is not None:
            returned = sims >= threshold
            tp, n_returned = torch.count_nonzero(returned & same, dim=1), torch.count_nonzero(returned, dim=1)
            values["f1"] = _f1(tp, n_returned, n_rel, with_self=False)
        for name, v in values.items():
            out[name][start:stop] = np.where(has, v.numpy(), np.nan)
        if threshold is not None:
            known = (groups[start:stop] >= 0).numpy()
            out["f1_all"][start:stop] = np.where(known, _f1(tp, n_returned, n_rel, with_self=True).numpy(), np.nan)
    return out


def query_means(per_query: dict[str, np.ndarray]) -> dict[str, float | None]:
    """The row values: each metric's mean over the queries it scores (None when it scores none)."""
    return {name: float(np.nanmean(v)) if np.isfinite(v).any() else None for name, v in per_query.items()}


def retrieval_metrics(embeddings, groups: np.ndarray | torch.Tensor, k: int = 10,
                      threshold: float | None = None) -> dict[str, float | None]:
    """Row metrics (see the module docstring); with a threshold also f1, f1_all and f1_threshold."""
    out = query_means(per_query_metrics(embeddings, groups, k, threshold))
    if threshold is not None:
        out["f1_threshold"] = float(threshold)
    return out


def choose_threshold(embeddings, groups: np.ndarray | torch.Tensor, grid=THRESHOLD_GRID) -> float | None:
    """The grid threshold with the best ``f1`` (mean over queries with a match; use on dev only).

    Ties go to the lowest threshold. None when it cannot be chosen: fewer than two items, or no
    query with a match (every threshold would score the same, so any value would be a default).
    """
    groups = torch.as_tensor(np.asarray(groups))
    if len(groups) < 2:
        return None
    grid_t = torch.tensor(grid, dtype=torch.float32)
    f1_sum = torch.zeros(len(grid), dtype=torch.float64)
    scored = 0
    for _, sims, same in query_blocks(embeddings, groups):
        has = same.any(1)
        scored += int(has.sum())
        n_returned, tp = _threshold_counts(sims[has], same[has], grid_t)
        f1_sum += _f1(tp, n_returned, same[has].sum(1, keepdim=True), with_self=False).sum(0)
    if not scored:
        return None
    return float(grid[int(torch.argmax(f1_sum))])

