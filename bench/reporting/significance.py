"""Bootstrap confidence intervals and "significantly worse" marks with a controlled error rate.

Seed spread says how much training noise moves a score; the test set is finite too, and with a
few hundred test items a gap of two points is often chance. Both answers come from the stored
test predictions alone (no retraining). The unit is the metric's ``aggregation`` in the metric
registry: labelled test items (classification), the retrieval queries a metric scores (the
candidate pool stays the whole test split), or labelled test pairs (pair matching).

Intervals: resample the test units with replacement and recompute the metric on every resample.
A group (leaderboard row) with several seeds is scored on every resample by each seed; its value
on the resample is the mean over its seeds plus the seed part of a bootstrap over its seeds (seeds
drawn with replacement, the draw's deviation from the mean scaled by sqrt(m/(m-1)) so that its
variance is the unbiased s^2/m). Items and seeds are resampled together, so an interval reflects
both the finite test set and training noise.

Marks: every pair of groups is compared at once, paired over the same test units and two-sided,
with the family-wise error across the whole leaderboard held at ``alpha`` by a max-T step-down
over all pairs; a row is "significantly worse" when some other row is significantly ahead of it.
No row is chosen as the reference before the test (the maximum is taken over all pairs), so
picking the best row on the same test items cannot flatter it. The row with the best value is
labelled "best"; "≈" marks rows that no row beats significantly.

- Every group one trial (one seed): a permutation test, exact. Under the complete null (no
  group better than another) the groups' outputs on a unit are exchangeable, so the group labels
  are shuffled independently within every unit and the metric is recomputed on the shuffled
  predictions (macro-F1, pair F1 and pair AP too, not only additive means); the Westfall-Young
  step-down over max |difference| gives adjusted p = (1 + #{shuffles reaching it}) / (B + 1),
  at most ``alpha`` with probability at most ``alpha`` whatever the number of rows.
- Some group with several seeds: the bootstrap above (units and seeds resampled together) and a
  bootstrap max-t step-down (Romano & Wolf 2005), conservative in simulation. A unit is not the
  unit of exchangeability here: a seed's training noise moves all its units together, so
  shuffling groups (or (group, seed) trials) within each unit spreads one lucky seed's advantage
  over all groups, the shuffled differences vary less than real ones, and too many rows are
  marked (about 40% of leaderboards of 10 equal rows with a seed sd of 0.02: see
  ``benchmarks/significance_calibration.py --seeds-averaged-per-item``). Shuffling whole trials is exact only for this test set (not for the item population)
  and has too few arrangements with 2 or 3 seeds a row (2 x 3 seeds: 20) to reach p < 0.05.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bench.metrics import registry
from bench.metrics.classification import macro_f1_rows
from bench.metrics.ties import tie_rounded

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "top5_accuracy")
PAIR_METRICS = ("pair_f1", "pair_precision", "pair_recall", "pair_ap")
METRICS = CLASSIFICATION_METRICS  # classification metrics with a bootstrap; retrieval ones: see is_per_query
N_RESAMPLES = 1000  # bootstrap resamples, and shuffles of the permutation test
LEVEL = 0.95
ALPHA = 0.05
_BATCH = 100  # resamples scored at once: memory grows with batch x test items
_PAIR_CHUNK = 256  # pairs of groups whose resampled differences are held at once
_PERMUTED_CELLS = 2_000_000  # (shuffles x groups x units) held at once: 16 MB an array

_macro_f1 = macro_f1_rows  # (rows of resampled items) the one definition, bench/metrics/classification.py


def is_per_query(metric: str) -> bool:
    """Retrieval row metrics: a mean of per-query values stored in the predictions table."""
    found = registry.lookup(metric)
    return found is not None and found.aggregation == "query" and found.split == "test"


def is_pair_metric(metric: str | None) -> bool:
    found = registry.lookup(metric) if metric is not None else None
    return found is not None and found.aggregation == "pair" and found.bootstrap


@dataclass
class EncodedPredictions:
    """One trial's test predictions for one metric as arrays, in a fixed unit order.

    Classification: integer label codes (``true``, ``pred``) and top-5 hits. Retrieval: each
    query's value of the metric (``per_query``), whose mean over the queries is the row value.
    Pairs: each pair's label, tie-rounded score and prediction at the row's threshold.
    """

    true: np.ndarray | None
    pred: np.ndarray | None
    top_hit: np.ndarray | None
    n_labels: int
    per_query: dict[str, np.ndarray] = field(default_factory=dict)
    pair_label: np.ndarray | None = None
    pair_score: np.ndarray | None = None
    pair_pred: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        if self.true is not None:
            return len(self.true)
        if self.pair_label is not None:
            return len(self.pair_label)
        return len(next(iter(self.per_query.values()))) if self.per_query else 0

    def score(self, metric: str, idx: np.ndarray) -> np.ndarray:
        """The metric on each resample; ``idx`` is (resamples, units) of unit positions."""
        if metric in self.per_query:
            return self.per_query[metric][idx].mean(axis=1)
        if metric == "accuracy":
            return (self.true[idx] == self.pred[idx]).mean(axis=1)
        if metric == "top5_accuracy":
            return self.top_hit[idx].mean(axis=1)
        if metric == "macro_f1":
            return macro_f1_rows(self.true[idx], self.pred[idx], self.n_labels)
        if metric == "pair_ap" and self.pair_label is not None:
            return _weighted_average_precision(self.pair_score, self.pair_label, _counts(idx, self.n_items))
        if metric in PAIR_METRICS and self.pair_pred is not None:
            return _pair_scores(self.pair_label[idx], self.pair_pred[idx], metric)
        raise ValueError(f"no bootstrap for metric {metric!r}: the predictions hold neither it "
                         f"({', '.join(CLASSIFICATION_METRICS)} need labels, pair metrics need pairs) "
                         "nor its per-query values")

    def supports(self, metric: str) -> bool:
        if metric in self.per_query:
            return True
        if metric in PAIR_METRICS:
            return self.pair_label is not None and (metric == "pair_ap" or self.pair_pred is not None)
        return (self.true is not None and metric in CLASSIFICATION_METRICS
                and (metric != "top5_accuracy" or self.top_hit is not None))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(resamples, n) multiplicity of each unit in each resample."""
    b = idx.shape[0]
    return np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)


def _weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's, pairs of equal score decided together) of each weight row:
    a resample drawing a pair w times counts it w times. NaN for a resample without a match."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(float)
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last position of each distinct score
    w = weights[:, order].astype(float)
    tp = np.cumsum(w * y, axis=1)[:, ends]
    seen = np.cumsum(w, axis=1)[:, ends]
    gained = np.diff(tp, axis=1, prepend=0.0)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (gained * precision).sum(axis=1) / total, np.nan)


def _average_precision_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's, pairs of equal score decided together) of each row of
    (rows, pairs) scores against the same labels. NaN when no pair is a match."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    tp = np.cumsum(labels[order], axis=1, dtype=float)
    ends = np.ones_like(s, dtype=bool)
    ends[:, :-1] = s[:, 1:] != s[:, :-1]  # last position of each run of equal scores
    at_end = np.maximum.accumulate(np.where(ends, tp, 0.0), axis=1)  # tp at the last end so far (tp never falls)
    before = np.concatenate([np.zeros((len(s), 1)), at_end[:, :-1]], axis=1)
    gained = np.where(ends, tp - before, 0.0)
    total = float(labels.sum())
    if total == 0:
        return np.full(len(s), np.nan)
    return (gained * tp / np.arange(1, s.shape[1] + 1)).sum(axis=1) / total


def _pair_scores(labels: np.ndarray, predicted: np.ndarray, metric: str) -> np.ndarray:
    """Precision, recall or F1 of the match class on each resample (0 where undefined, as the row)."""
    tp = (labels & predicted).sum(axis=1).astype(float)
    n_pred, n_true = predicted.sum(axis=1), labels.sum(axis=1)
    denom = {"pair_precision": n_pred, "pair_recall": n_true, "pair_f1": n_pred + n_true}[metric]
    num = 2 * tp if metric == "pair_f1" else tp
    return np.divide(num, denom, out=np.zeros_like(tp), where=denom > 0)


def resamples(n_items: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Batches of bootstrap resamples (item positions); the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BATCH):
        yield rng.integers(0, n_items, size=(min(_BATCH, n_resamples - start), n_items))


def encode_predictions(predictions: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    """Per trial key: item_id, then what the bootstrap can score.

    Classification (when the table has labels): true, pred (shared integer label codes, null for
    items without a label or prediction) and top_hit. Retrieval: the per-query columns of the
    row metrics (null where the query is left out). Pairs (left_id, right_id, label, score): one
    unit per pair (item_id = the two ids and the pair's occurrence), pair_label, pair_score
    (tie-rounded) and pair_pred. Tables with none of these give nothing.
    """
    if predictions is None or predictions.is_empty() or "trial_key" not in predictions.columns:
        return {}
    if {"left_id", "right_id", "label", "score"} <= set(predictions.columns):
        return _encode_pairs(predictions)
    if "item_id" not in predictions.columns:
        return {}
    per_query = [c for c in predictions.columns if is_per_query(c) and predictions.schema[c].is_numeric()]
    labelled = {"true_label", "pred_label"} <= set(predictions.columns) and predictions["true_label"].drop_nulls().len() > 0
    if not per_query and not labelled:
        return {}
    columns = [pl.col(c).cast(pl.Float64).fill_nan(None) for c in per_query]
    n_labels = 0
    if labelled:
        p = predictions.with_columns(pl.col("true_label").cast(pl.Utf8), pl.col("pred_label").cast(pl.Utf8))
        labels = sorted(set(p["true_label"].drop_nulls().to_list()) | set(p["pred_label"].drop_nulls().to_list()))
        codes = {label: i for i, label in enumerate(labels)}
        n_labels = len(labels)
        known = pl.col("true_label").is_not_null() & pl.col("pred_label").is_not_null()
        hit = (pl.col("topk_labels").cast(pl.List(pl.Utf8)).list.contains(pl.col("true_label"))
               if "topk_labels" in p.columns else pl.lit(None, dtype=pl.Boolean))
        columns += [pl.when(known).then(pl.col("true_label").replace_strict(codes, default=None, return_dtype=pl.Int64)).alias("true"),
                    pl.when(known).then(pl.col("pred_label").replace_strict(codes, default=None, return_dtype=pl.Int64)).alias("pred"),
                    pl.when(known).then(hit).alias("top_hit")]
        predictions = p
    p = predictions.select("trial_key", "item_id", *columns)
    return {key: frame.unique("item_id", keep="first", maintain_order=True).with_columns(pl.lit(n_labels).alias("n_labels"))
            for (key,), frame in p.partition_by("trial_key", as_dict=True).items()}


def _encode_pairs(predictions: pl.DataFrame) -> dict[str, pl.DataFrame]:
    pairs = predictions.filter(pl.col("left_id").is_not_null() & pl.col("label").is_not_null())
    if pairs.is_empty():
        return {}
    occurrence = pl.int_range(pl.len()).over("trial_key", "left_id", "right_id")  # a pair listed twice counts twice
    predicted = pl.col("predicted") if "predicted" in pairs.columns else pl.lit(None, dtype=pl.Int8)
    p = pairs.select("trial_key",
                     pl.concat_str([pl.col("left_id"), pl.col("right_id"), occurrence.cast(pl.Utf8)],
                                   separator="\x1f").alias("item_id"),
                     pl.col("label").cast(pl.Int8).alias("pair_label"),
                     pl.col("score").cast(pl.Float64).alias("pair_score"),
                     predicted.cast(pl.Int8).alias("pair_pred"))
    return {key: frame.with_columns(pl.lit(0).alias("n_labels"))
            for (key,), frame in p.partition_by("trial_key", as_dict=True).items()}


def _scorable(frame: pl.DataFrame, metric: str | None) -> pl.Expr | None:
    """The units on which ``metric`` is defined (None: the metric is not in the table)."""
    if "pair_label" in frame.columns:
        return pl.col("pair_label").is_not_null()
    if metric is not None and is_per_query(metric):
        return pl.col(metric).is_not_null() if metric in frame.columns else None
    return pl.col("true").is_not_null() if "true" in frame.columns else None


def available(frame: pl.DataFrame) -> list[str]:
    """The metrics a trial's encoded predictions can be bootstrapped on."""
    if "pair_label" in frame.columns:
        out = ["pair_ap"] if frame["pair_label"].sum() else []
        return out + ([m for m in PAIR_METRICS if m != "pair_ap"] if frame["pair_pred"].null_count() == 0 else [])
    out = [c for c in frame.columns if is_per_query(c) and frame[c].null_count() < frame.height]
    if "true" in frame.columns and frame["true"].null_count() < frame.height:
        hits = frame.filter(pl.col("true").is_not_null())["top_hit"]
        out = [m for m in CLASSIFICATION_METRICS if m != "top5_accuracy" or not hits.null_count()] + out
    return out


def align(frames: Sequence[pl.DataFrame], metric: str | None = None) -> list[EncodedPredictions]:
    """The trials restricted to the units all of them can be scored on by ``metric``, in one order.

    ``metric`` None or a classification metric: the labelled items; a retrieval metric: the
    queries it scores (those with a match; for f1_all those with a known group); a pair metric:
    the labelled pairs.
    """
    common = None
    for f in frames:
        where = _scorable(f, metric)
        items = set(f.filter(where)["item_id"].to_list()) if where is not None else set()
        common = items if common is None else common & items
    order = frames[0].filter(pl.col("item_id").is_in(list(common))).select("item_id")
    out = []
    for f in frames:
        a = order.join(f, on="item_id", how="left", maintain_order="left")
        if "pair_label" in a.columns:
            out.append(EncodedPredictions(None, None, None, 0, pair_label=a["pair_label"].to_numpy().astype(np.int64),
                                          pair_score=tie_rounded(a["pair_score"].to_numpy()),
                                          pair_pred=None if a["pair_pred"].null_count()
                                          else a["pair_pred"].to_numpy().astype(np.int64)))
            continue
        if metric is not None and is_per_query(metric):
            values = a[metric].to_numpy() if metric in a.columns else np.zeros(0)
            out.append(EncodedPredictions(None, None, None, 0, {metric: values}))
            continue
        if "true" not in a.columns:  # no labels in this trial's table: nothing in common to score
            out.append(EncodedPredictions(np.zeros(0, np.int64), np.zeros(0, np.int64), None, 0))
            continue
        hits = a["top_hit"]
        out.append(EncodedPredictions(a["true"].to_numpy(), a["pred"].to_numpy(),
                                      None if hits.null_count() else hits.to_numpy().astype(bool),
                                      int(f["n_labels"][0]) if f.height else 0))
    return out


# ---- the group's value on every resample: items and seeds together ---------------------------------

def pooled_over_seeds(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The group's value on each resample from ``values`` (seeds, resamples): the mean over seeds
    plus a bootstrap over seeds (drawn with replacement; the draw's deviation from the mean scaled by
    sqrt(m/(m-1)), so its variance is s^2/m, not (m-1)/m of it). One seed: its values as they are."""
    m = values.shape[0]
    mean = values.mean(axis=0)
    if m < 2:
        return mean
    pick = rng.integers(0, m, size=values.shape)
    drawn = np.take_along_axis(values, pick, axis=0).mean(axis=0)
    return mean + np.sqrt(m / (m - 1)) * (drawn - mean)


def _seed_rngs(n_groups: int, seed: int) -> list[np.random.Generator]:
    """One generator per group for its seed draws, apart from the item resamples' generator."""
    return [np.random.default_rng([seed, 1, g]) for g in range(n_groups)]


def groups_distribution(groups: Sequence[Sequence[EncodedPredictions]], metric: str,
                        n_resamples: int = N_RESAMPLES, seed: int = 0,
                        resample_seeds: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(observed, draws): each group's value on all units (mean over its seeds), shape (groups,), and
    on every resample, shape (groups, resamples). All groups share each resample of the units
    (they must be aligned to the same units): differences between groups are paired."""
    n = groups[0][0].n_items
    whole = np.arange(n)[None, :]
    observed = np.array([np.mean([t.score(metric, whole)[0] for t in g]) for g in groups])
    rngs = _seed_rngs(len(groups), seed)
    batches = []
    for idx in resamples(n, n_resamples, seed):
        batch = []
        for g, rng in zip(groups, rngs):
            values = np.stack([t.score(metric, idx) for t in g])
            batch.append(pooled_over_seeds(values, rng) if resample_seeds else values.mean(axis=0))
        batches.append(np.stack(batch))
    return observed, np.concatenate(batches, axis=1)


def group_distribution(trials: Sequence[EncodedPredictions], metric: str, n_resamples: int = N_RESAMPLES,
                       seed: int = 0, resample_seeds: bool = True) -> np.ndarray:
    """One group's metric on every resample (its seeds pooled as in ``pooled_over_seeds``)."""
    return groups_distribution([trials], metric, n_resamples, seed, resample_seeds)[1][0]


def interval(distribution: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.nanquantile(distribution, [tail, 1 - tail])
    return float(low), float(high)


# ---- all pairs at once, family-wise error controlled ------------------------------------------------

def pairwise_adjusted_p(observed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(groups, groups) family-wise adjusted two-sided p-values of every pairwise difference.

    Bootstrap max-t step-down (Romano & Wolf 2005): each pair's t is its observed difference over
    the bootstrap standard deviation of the difference; a pair's adjusted p is the share of
    resamples on which the largest centred |t*| among the pairs not more significant than it reaches
    its |t| (made monotone in |t|). A pair whose difference never varies is p = 1 when equal, 0 when
    not. Rejecting every pair with p < alpha holds the chance of any false claim near alpha.
    """
    k = len(observed)
    i, j = np.triu_indices(k, 1)
    if not len(i):
        return np.full((k, k), np.nan)
    keep = np.isfinite(draws).all(axis=0)  # a resample where a metric is undefined (no match drawn) is left out
    draws = draws[:, keep]
    p_pairs = np.ones(len(i))
    if draws.shape[1] == 0:
        return _symmetric(k, i, j, p_pairs)
    diff = observed[i] - observed[j]
    se = np.empty(len(i))
    for start in range(0, len(i), _PAIR_CHUNK):
        part = slice(start, start + _PAIR_CHUNK)
        se[part] = (draws[i[part]] - draws[j[part]]).std(axis=1)
    varies = se > 1e-12
    t = np.where(varies, np.abs(diff) / np.where(varies, se, 1.0), np.where(np.abs(diff) > 1e-12, np.inf, 0.0))
    order = np.argsort(-t, kind="stable")
    order = order[varies[order]]  # pairs that never vary: not part of the maximum
    running = np.full(draws.shape[1], -np.inf)  # max |t*| over the pairs after the current chunk
    p_sorted = np.empty(len(order))
    for end in range(len(order), 0, -_PAIR_CHUNK):
        part = order[max(0, end - _PAIR_CHUNK):end]
        d = draws[i[part]] - draws[j[part]]
        centred = np.abs(d - d.mean(axis=1, keepdims=True)) / se[part][:, None]
        suffix = np.maximum.accumulate(centred[::-1], axis=0)[::-1]  # max over this pair and those after it
        suffix = np.maximum(suffix, running[None, :])
        p_sorted[max(0, end - _PAIR_CHUNK):end] = (suffix >= t[part][:, None] - 1e-12).mean(axis=1)
        running = suffix[0]
    p_pairs[order] = np.maximum.accumulate(p_sorted) if len(order) else p_sorted
    constant = ~varies
    p_pairs[constant] = np.where(np.isinf(t[constant]), 0.0, 1.0)
    return _symmetric(k, i, j, p_pairs)


def _symmetric(k: int, i: np.ndarray, j: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.full((k, k), np.nan)
    out[i, j] = out[j, i] = p
    return out


# ---- one seed a group: a permutation test, exact ----------------------------------------------------

def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, equal values sharing the mean of their ranks: the order, ties kept, nothing else."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(ordered)] - 1
    out = np.empty(len(values))
    out[order] = ((first + last) / 2 + 1)[np.cumsum(starts) - 1]
    return out


def permuted_values(trials: Sequence[EncodedPredictions], metric: str, shuffle: np.ndarray) -> np.ndarray:
    """(shuffles, groups): each group's metric when its output on unit u is that of group
    ``shuffle[b, g, u]`` (one trial a group, all aligned to the same units). Non-additive metrics
    (macro-F1, pair precision/recall/F1, pair AP) are recomputed from the shuffled predictions; pair
    AP shuffles each pair's mid-rank within its own row's scores (AP depends only on the order, ties
    kept), so that rows whose scores live on different scales are exchangeable in what AP reads."""
    b, k, n = shuffle.shape
    units = np.arange(n)
    first = trials[0]

    def gathered(arrays: list[np.ndarray]) -> np.ndarray:  # (shuffles, groups, units)
        return np.stack(arrays)[shuffle, units]

    def shared(name: str) -> np.ndarray:
        values = getattr(first, name)
        if any(not np.array_equal(getattr(t, name), values) for t in trials[1:]):
            raise ValueError(f"{metric}: the groups' {name} differ on the same units; align them first")
        return values

    if metric in first.per_query:
        return gathered([t.per_query[metric] for t in trials]).mean(axis=2)
    if metric == "accuracy":
        return gathered([t.true == t.pred for t in trials]).mean(axis=2)
    if metric == "top5_accuracy":
        return gathered([t.top_hit for t in trials]).mean(axis=2)
    if metric == "macro_f1":
        true = np.broadcast_to(shared("true"), (b * k, n))
        pred = gathered([t.pred for t in trials]).reshape(b * k, n)
        return macro_f1_rows(true, pred, max(t.n_labels for t in trials)).reshape(b, k)
    if metric == "pair_ap":  # scores as their rank within their own row: rows on different scales mix fairly
        scores = gathered([_mid_ranks(t.pair_score) / n for t in trials]).reshape(b * k, n)
        return _average_precision_rows(scores, shared("pair_label")).reshape(b, k)
    if metric in PAIR_METRICS:
        labels = np.broadcast_to(shared("pair_label"), (b * k, n))
        return _pair_scores(labels, gathered([t.pair_pred for t in trials]).reshape(b * k, n), metric).reshape(b, k)
    raise ValueError(f"no permutation test for metric {metric!r}")


def permutation_null(trials: Sequence[EncodedPredictions], metric: str, n_permutations: int = N_RESAMPLES,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(observed, shuffled): each group's value, shape (groups,), and its value after each of
    ``n_permutations`` shuffles of the group labels within every unit, shape (groups, shuffles).

    The unit of exchangeability is the test unit (item, query or pair): under the complete null the
    groups' outputs on one unit are exchangeable, whatever the units' difficulty or correlation.
    Shuffles are drawn in chunks (memory ~ chunk x groups x units); the same seed, the same shuffles."""
    k, n = len(trials), trials[0].n_items
    identity = np.broadcast_to(np.arange(k)[None, :, None], (1, k, n))
    observed = permuted_values(trials, metric, identity)[0]
    rng = np.random.default_rng([seed, 2])
    step = max(1, _PERMUTED_CELLS // max(1, k * n))
    shuffled = []
    for start in range(0, n_permutations, step):
        size = min(step, n_permutations - start)
        shuffle = rng.random((size, n, k)).argsort(axis=2).transpose(0, 2, 1)
        shuffled.append(permuted_values(trials, metric, shuffle))
    return observed, np.concatenate(shuffled).T


def permutation_adjusted_p(observed: np.ndarray, shuffled: np.ndarray) -> np.ndarray:
    """(groups, groups) family-wise adjusted two-sided p-values of every pairwise difference from
    the groups' values under within-unit shuffles of the group labels (``permutation_null``).

    Westfall-Young step-down max-T on |difference|: pairs in decreasing order of their observed
    |difference|; a pair's p is (1 + the number of shuffles on which the largest |difference| among
    the pairs not more significant than it reaches its own) / (shuffles + 1), made monotone. No
    studentizing is needed: every pair's shuffled difference has the same distribution (a random
    pair of distinct groups on each unit). Under the complete null the observed data is one more
    equally likely shuffle, so the chance that any p < alpha is at most alpha.
    """
    k = len(observed)
    i, j = np.triu_indices(k, 1)
    if not len(i):
        return np.full((k, k), np.nan)
    shuffled = shuffled[:, np.isfinite(shuffled).all(axis=0)]
    n = shuffled.shape[1]
    stat = np.abs(observed[i] - observed[j])
    order = np.argsort(-stat, kind="stable")
    running = np.full(n, -np.inf)  # max |difference| over the pairs after the current chunk
    p_sorted = np.empty(len(order))
    for end in range(len(order), 0, -_PAIR_CHUNK):
        part = order[max(0, end - _PAIR_CHUNK):end]
        d = np.abs(shuffled[i[part]] - shuffled[j[part]])
        suffix = np.maximum(np.maximum.accumulate(d[::-1], axis=0)[::-1], running[None, :])
        p_sorted[max(0, end - _PAIR_CHUNK):end] = (1 + (suffix >= stat[part][:, None] - 1e-12).sum(axis=1)) / (n + 1)
        running = suffix[0]
    p_pairs = np.empty(len(i))
    p_pairs[order] = np.maximum.accumulate(p_sorted)
    return _symmetric(k, i, j, p_pairs)


# ---- the marks --------------------------------------------------------------------------------------

def leaderboard_marks(observed: np.ndarray, draws: np.ndarray, alpha: float = ALPHA,
                      higher_is_better: bool = True, best: int | None = None,
                      label_best: bool = True, permuted: bool = False) -> tuple[list[float | None], list[str]]:
    """Per group: (p, mark). The best group (``best``, else the best observed value) is "best" with
    p None; any other group gets the smallest adjusted p of its comparisons with the groups at least
    as good as it, and "≈" when that p >= alpha (no group is significantly ahead of it), "" else.
    ``draws``: bootstrap draws (``groups_distribution``), or with ``permuted`` the values under
    shuffles (``permutation_null``). ``label_best`` False: no group is labelled, every one is
    marked (a ranking not made by test)."""
    sign = 1.0 if higher_is_better else -1.0
    value = sign * observed
    p = permutation_adjusted_p(value, sign * draws) if permuted else pairwise_adjusted_p(value, sign * draws)
    best = (int(np.nanargmax(value)) if best is None else best) if label_best else -1
    out_p, marks = [], []
    for g in range(len(observed)):
        if g == best:
            out_p.append(None)
            marks.append("best")
            continue
        ahead = [h for h in range(len(observed)) if h != g and value[h] >= value[g]]
        ps = [p[g, h] for h in ahead if not np.isnan(p[g, h])]
        worst = float(min(ps)) if ps else 1.0
        out_p.append(worst)
        marks.append("≈" if worst >= alpha else "")
    return out_p, marks


def mark_groups(groups: Sequence[Sequence[EncodedPredictions]], metric: str, n_resamples: int = N_RESAMPLES,
                seed: int = 0, alpha: float = ALPHA, higher_is_better: bool = True, best: int | None = None,
                label_best: bool = True) -> tuple[list[float | None], list[str], str]:
    """(p, marks, method) of groups aligned to the same units: the permutation test when every group
    has one trial ("permutation"), else the bootstrap of units and seeds ("bootstrap"); see the
    module docstring. ``n_resamples`` is the number of shuffles or resamples."""
    if all(len(g) == 1 for g in groups):
        observed, draws = permutation_null([g[0] for g in groups], metric, n_resamples, seed)
        method = "permutation"
    else:
        observed, draws = groups_distribution(groups, metric, n_resamples, seed)
        method = "bootstrap"
    p, marks = leaderboard_marks(observed, draws, alpha, higher_is_better, best, label_best,
                                 permuted=method == "permutation")
    return p, marks, method


def any_marked_worse(observed: np.ndarray, draws: np.ndarray, alpha: float = ALPHA) -> bool:
    """Whether a leaderboard of these groups marks any row significantly worse."""
    return "" in leaderboard_marks(observed, draws, alpha)[1]


def share_not_ahead(best: Sequence[EncodedPredictions], other: Sequence[EncodedPredictions], metric: str,
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> float:
    """Paired bootstrap of two groups alone: the share of resamples on which ``best`` does not score
    above ``other`` (both aligned to the same units; seeds averaged, not resampled)."""
    _, draws = groups_distribution([best, other], metric, n_resamples, seed, resample_seeds=False)
    return float((draws[0] <= draws[1] + 1e-12).mean())


# ---- tables ------------------------------------------------------------------------------------------

def trial_intervals(rows: pl.DataFrame, predictions: pl.DataFrame | None, metrics: Sequence[str] | None = None,
                    n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> pl.DataFrame:
    """One line per (trial, metric): the value on the stored predictions and its bootstrap interval.

    ``metrics`` None: every metric the trial's predictions support.
    """
    encoded = encode_predictions(predictions)
    ok = rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows
    out = []
    for key in ok["trial_key"].to_list() if "trial_key" in ok.columns else []:
        if key not in encoded:
            continue
        for m in [m for m in (metrics or available(encoded[key])) if m in available(encoded[key])]:
            (trial,) = align([encoded[key]], m)
            if trial.n_items < 2:
                continue
            whole = np.arange(trial.n_items)[None, :]
            low, high = interval(group_distribution([trial], m, n_resamples, seed), level)
            out.append({"trial_key": key, "metric": m, "value": float(trial.score(m, whole)[0]),
                        "ci_low": low, "ci_high": high, "n_items": trial.n_items})
    schema = {"trial_key": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "n_items": pl.Int64}
    return pl.DataFrame(out, schema=schema)


def group_significance(rows: pl.DataFrame, predictions: pl.DataFrame | None, group_by: list[str],
                       metrics: Sequence[str], target: str | None, best: tuple | None,
                       n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL,
                       alpha: float = ALPHA, label_best: bool = True) -> pl.DataFrame | None:
    """Per group: ``<metric>_ci_low/_ci_high`` for each metric, and for ``target`` the marks.

    Intervals resample each group's own test units and its seeds. Marks (``near_best``: "best",
    "≈" or "") and ``best_p`` (the family-wise adjusted p of the comparison most against the row)
    compare all groups at once on the units every group was tested on (see the module docstring);
    ``best`` names the group labelled best (None: the best value of ``target``).
    None when the run has no usable predictions (no labels, per-query values or pairs).
    """
    encoded = encode_predictions(predictions)
    ok = rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows
    ok = ok.filter(pl.col("trial_key").is_in(list(encoded))) if "trial_key" in ok.columns else ok.head(0)
    if ok.is_empty() or not set(group_by) <= set(ok.columns):
        return None
    groups = {g: frame["trial_key"].to_list() for g, frame in ok.group_by(group_by, maintain_order=True)}
    supported = set(available(encoded[groups[next(iter(groups))][0]]))
    metrics = [m for m in metrics if m in supported]
    target = target if target in supported else None
    if not metrics and target is None:
        return None
    lines = []
    for g, keys in groups.items():
        line = dict(zip(group_by, g))
        for m in metrics:
            trials = align([encoded[k] for k in keys], m)
            low, high = interval(group_distribution(trials, m, n_resamples, seed), level) if trials[0].n_items > 1 \
                else (None, None)
            line[f"{m}_ci_low"], line[f"{m}_ci_high"] = low, high
        lines.append(line)
    if target is not None:
        marks = _marks(groups, best, encoded, target, n_resamples, seed, alpha, label_best)
        for line, (p, mark) in zip(lines, marks):
            line["best_p"], line["near_best"] = p, mark
    schema = {**{c: ok.schema[c] for c in group_by},
              **{f"{m}_ci_{end}": pl.Float64 for m in metrics for end in ("low", "high")},
              **({"best_p": pl.Float64, "near_best": pl.Utf8} if target is not None else {})}
    return pl.DataFrame(lines, schema=schema)


def _marks(groups: dict, best: tuple | None, encoded: dict, target: str, n_resamples: int, seed: int,
           alpha: float, label_best: bool = True) -> list[tuple[float | None, str | None]]:
    names = list(groups)
    if len(names) < 2:
        return [(None, "best" if label_best else None)] * len(names)
    sizes = [len(groups[g]) for g in names]
    aligned = align([encoded[k] for g in names for k in groups[g]], target)
    if aligned[0].n_items < 2:
        return [(None, None)] * len(names)
    bounds = np.cumsum([0, *sizes])
    trials = [aligned[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    best_index = names.index(tuple(best)) if best is not None and tuple(best) in names else None
    p, marks, _ = mark_groups(trials, target, n_resamples, seed, alpha, registry.higher_is_better(target),
                              best_index, label_best)
    return list(zip(p, marks))
