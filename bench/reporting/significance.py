"""Bootstrap confidence intervals and "not significantly worse than the best" marks.

Seed spread says how much training noise moves a score; the test set is finite too, and with a
few hundred test items a gap of two points is often chance. Both answers come from the stored
test predictions alone (no retraining): resample test items with replacement and recompute the
metric on every resample (percentile bootstrap). Classification metrics resample the labelled
test items; retrieval metrics (a mean over queries, stored per query beside the predictions)
resample the queries they score, the pool of candidates staying the whole test split.

Groups (leaderboard rows) pool their seeds: every seed of a group is scored on the same
resampled items and the group's value is the mean over seeds, as on the leaderboard. Two groups
are compared on the same resamples of the items both were tested on (a paired bootstrap).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bench.metrics import registry
from bench.metrics.classification import macro_f1_rows

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "top5_accuracy")
METRICS = CLASSIFICATION_METRICS  # classification metrics with a bootstrap; retrieval ones: see is_per_query
N_RESAMPLES = 1000
LEVEL = 0.95
ALPHA = 0.05
_BATCH = 100  # resamples scored at once: memory grows with batch x test items


def is_per_query(metric: str) -> bool:
    """Retrieval row metrics: a mean of per-query values stored in the predictions table."""
    found = registry.lookup(metric)
    return found is not None and found.aggregation == "query" and found.split == "test"


@dataclass
class EncodedPredictions:
    """One trial's test predictions for one metric as arrays, in a fixed item order.

    Classification: integer label codes (``true``, ``pred``) and top-5 hits. Retrieval: each
    query's value of the metric (``per_query``), whose mean over the queries is the row value.
    """

    true: np.ndarray | None
    pred: np.ndarray | None
    top_hit: np.ndarray | None
    n_labels: int
    per_query: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        if self.true is not None:
            return len(self.true)
        return len(next(iter(self.per_query.values()))) if self.per_query else 0

    def score(self, metric: str, idx: np.ndarray) -> np.ndarray:
        """The metric on each resample; ``idx`` is (resamples, items) of item positions."""
        if metric in self.per_query:
            return self.per_query[metric][idx].mean(axis=1)
        if metric == "accuracy":
            return (self.true[idx] == self.pred[idx]).mean(axis=1)
        if metric == "top5_accuracy":
            return self.top_hit[idx].mean(axis=1)
        if metric == "macro_f1":
            return _macro_f1(self.true[idx], self.pred[idx], self.n_labels)
        raise ValueError(f"no bootstrap for metric {metric!r}: the predictions hold neither it "
                         f"({', '.join(CLASSIFICATION_METRICS)} need labels) nor its per-query values")

    def supports(self, metric: str) -> bool:
        if metric in self.per_query:
            return True
        return (self.true is not None and metric in CLASSIFICATION_METRICS
                and (metric != "top5_accuracy" or self.top_hit is not None))


_macro_f1 = macro_f1_rows  # (rows of resampled items) the one definition, bench/metrics/classification.py


def resamples(n_items: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Batches of bootstrap resamples (item positions); the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BATCH):
        yield rng.integers(0, n_items, size=(min(_BATCH, n_resamples - start), n_items))


def encode_predictions(predictions: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    """Per trial key: item_id, then what the bootstrap can score.

    Classification (when the table has labels): true, pred (shared integer label codes, null for
    items without a label or prediction) and top_hit. Retrieval: the per-query columns of the
    row metrics (null where the query is left out). Tables with neither give nothing.
    """
    if predictions is None or predictions.is_empty() or not {"trial_key", "item_id"} <= set(predictions.columns):
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


def _scorable(frame: pl.DataFrame, metric: str | None) -> pl.Expr | None:
    """The items on which ``metric`` is defined (None: the metric is not in the table)."""
    if metric is not None and is_per_query(metric):
        return pl.col(metric).is_not_null() if metric in frame.columns else None
    return pl.col("true").is_not_null() if "true" in frame.columns else None


def available(frame: pl.DataFrame) -> list[str]:
    """The metrics a trial's encoded predictions can be bootstrapped on."""
    out = [c for c in frame.columns if is_per_query(c) and frame[c].null_count() < frame.height]
    if "true" in frame.columns and frame["true"].null_count() < frame.height:
        hits = frame.filter(pl.col("true").is_not_null())["top_hit"]
        out = [m for m in CLASSIFICATION_METRICS if m != "top5_accuracy" or not hits.null_count()] + out
    return out


def align(frames: Sequence[pl.DataFrame], metric: str | None = None) -> list[EncodedPredictions]:
    """The trials restricted to the items all of them can be scored on by ``metric``, in one order.

    ``metric`` None or a classification metric: the labelled items; a retrieval metric: the
    queries it scores (those with a match; for f1_all those with a known group).
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


def group_distribution(trials: Sequence[EncodedPredictions], metric: str, n_resamples: int = N_RESAMPLES,
                       seed: int = 0) -> np.ndarray:
    """The group's metric (mean over its seeds) on every resample of the shared items."""
    return np.concatenate([np.mean([t.score(metric, idx) for t in trials], axis=0)
                           for idx in resamples(trials[0].n_items, n_resamples, seed)])


def interval(distribution: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(distribution, [tail, 1 - tail])
    return float(low), float(high)


def share_not_ahead(best: Sequence[EncodedPredictions], other: Sequence[EncodedPredictions], metric: str,
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> float:
    """Paired bootstrap: the share of resamples on which ``best`` does not score above ``other``.

    Both groups must be aligned to the same items. A small share means the lead is unlikely to be
    an accident of which items landed in the test split.
    """
    not_ahead = 0
    for idx in resamples(best[0].n_items, n_resamples, seed):
        b = np.mean([t.score(metric, idx) for t in best], axis=0)
        o = np.mean([t.score(metric, idx) for t in other], axis=0)
        not_ahead += int((b <= o + 1e-12).sum())
    return not_ahead / n_resamples


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
                       alpha: float = ALPHA) -> pl.DataFrame | None:
    """Per group: ``<metric>_ci_low/_ci_high`` for each metric, and for ``target`` a comparison with ``best``.

    ``best_p`` is the share of paired resamples on which the best group is not ahead; ``near_best``
    is "best" for the best group, "≈" when best_p >= alpha (the gap is not significant), "" else.
    Retrieval metrics resample the scored test queries (the pool of candidates stays whole).
    None when the run has no usable predictions (no labels and no per-query retrieval values).
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
        if target is not None:
            line["best_p"], line["near_best"] = _versus_best(g, keys, groups, best, encoded, target,
                                                              n_resamples, seed, alpha)
        lines.append(line)
    schema = {**{c: ok.schema[c] for c in group_by},
              **{f"{m}_ci_{end}": pl.Float64 for m in metrics for end in ("low", "high")},
              **({"best_p": pl.Float64, "near_best": pl.Utf8} if target is not None else {})}
    return pl.DataFrame(lines, schema=schema)


def _versus_best(g: tuple, keys: list[str], groups: dict, best: tuple | None, encoded: dict, target: str,
                 n_resamples: int, seed: int, alpha: float) -> tuple[float | None, str | None]:
    best = tuple(best) if best is not None else None
    if best is None or best not in groups:
        return None, None
    if g == best:
        return None, "best"
    best_keys = groups[best]
    aligned = align([encoded[k] for k in best_keys + keys], target)
    if aligned[0].n_items < 2:
        return None, None
    p = share_not_ahead(aligned[:len(best_keys)], aligned[len(best_keys):], target, n_resamples, seed)
    return p, "≈" if p >= alpha else ""
