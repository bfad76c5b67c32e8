"""Bootstrap confidence intervals and "not significantly worse than the best" marks.

Seed spread says how much training noise moves a score; the test set is finite too, and with a
few hundred test items a gap of two points is often chance. Both answers come from the stored
test predictions alone (no retraining): resample test items with replacement and recompute the
metric on every resample (percentile bootstrap).

Groups (leaderboard rows) pool their seeds: every seed of a group is scored on the same
resampled items and the group's value is the mean over seeds, as on the leaderboard. Two groups
are compared on the same resamples of the items both were tested on (a paired bootstrap).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

METRICS = ("accuracy", "macro_f1", "top5_accuracy")
N_RESAMPLES = 1000
LEVEL = 0.95
ALPHA = 0.05
_BATCH = 100  # resamples scored at once: memory grows with batch x test items


@dataclass
class EncodedPredictions:
    """One trial's test predictions as integer arrays, in a fixed item order."""

    true: np.ndarray
    pred: np.ndarray
    top_hit: np.ndarray | None
    n_labels: int

    def score(self, metric: str, idx: np.ndarray) -> np.ndarray:
        """The metric on each resample; ``idx`` is (resamples, items) of item positions."""
        if metric == "accuracy":
            return (self.true[idx] == self.pred[idx]).mean(axis=1)
        if metric == "top5_accuracy":
            return self.top_hit[idx].mean(axis=1)
        if metric == "macro_f1":
            return _macro_f1(self.true[idx], self.pred[idx], self.n_labels)
        raise ValueError(f"no bootstrap for metric {metric!r}; supported: {', '.join(METRICS)}")

    def supports(self, metric: str) -> bool:
        return metric in METRICS and (metric != "top5_accuracy" or self.top_hit is not None)


def _macro_f1(true: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 per row over the labels present in that row's true labels (as the trial computes it)."""
    b = true.shape[0]
    offset = np.arange(b)[:, None] * n_labels
    shape = (b, n_labels)
    tp = np.bincount((offset + true)[true == pred], minlength=b * n_labels).reshape(shape)
    n_true = np.bincount((offset + true).ravel(), minlength=b * n_labels).reshape(shape)
    n_pred = np.bincount((offset + pred).ravel(), minlength=b * n_labels).reshape(shape)
    present = n_true > 0
    f1 = np.where(present, 2 * tp / np.maximum(n_true + n_pred, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def resamples(n_items: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Batches of bootstrap resamples (item positions); the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BATCH):
        yield rng.integers(0, n_items, size=(min(_BATCH, n_resamples - start), n_items))


def encode_predictions(predictions: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    """Per trial key: item_id, true, pred (shared integer label codes) and top_hit; unlabeled items dropped."""
    needed = {"trial_key", "item_id", "true_label", "pred_label"}
    if predictions is None or predictions.is_empty() or not needed <= set(predictions.columns):
        return {}
    p = predictions.filter(pl.col("true_label").is_not_null())
    if p.is_empty():
        return {}
    p = p.with_columns(pl.col("true_label").cast(pl.Utf8), pl.col("pred_label").cast(pl.Utf8))
    labels = sorted(set(p["true_label"].to_list()) | set(p["pred_label"].drop_nulls().to_list()))
    codes = {label: i for i, label in enumerate(labels)}
    hit = (pl.col("topk_labels").cast(pl.List(pl.Utf8)).list.contains(pl.col("true_label"))
           if "topk_labels" in p.columns else pl.lit(None, dtype=pl.Boolean))
    p = p.filter(pl.col("pred_label").is_not_null()).select(
        "trial_key", "item_id",
        pl.col("true_label").replace_strict(codes, return_dtype=pl.Int64).alias("true"),
        pl.col("pred_label").replace_strict(codes, return_dtype=pl.Int64).alias("pred"),
        hit.alias("top_hit"))
    return {key: frame.unique("item_id", keep="first", maintain_order=True).with_columns(pl.lit(len(labels)).alias("n_labels"))
            for (key,), frame in p.partition_by("trial_key", as_dict=True).items()}


def align(frames: Sequence[pl.DataFrame]) -> list[EncodedPredictions]:
    """The trials restricted to the items all of them were tested on, in one order."""
    common = set(frames[0]["item_id"].to_list())
    for f in frames[1:]:
        common &= set(f["item_id"].to_list())
    order = frames[0].filter(pl.col("item_id").is_in(list(common))).select("item_id")
    out = []
    for f in frames:
        a = order.join(f, on="item_id", how="left", maintain_order="left")
        hits = a["top_hit"]
        out.append(EncodedPredictions(a["true"].to_numpy(), a["pred"].to_numpy(),
                                      None if hits.null_count() else hits.to_numpy().astype(bool),
                                      int(f["n_labels"][0]) if f.height else 0))
    return out


def group_distribution(trials: Sequence[EncodedPredictions], metric: str, n_resamples: int = N_RESAMPLES,
                       seed: int = 0) -> np.ndarray:
    """The group's metric (mean over its seeds) on every resample of the shared items."""
    n = len(trials[0].true)
    return np.concatenate([np.mean([t.score(metric, idx) for t in trials], axis=0)
                           for idx in resamples(n, n_resamples, seed)])


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
    n = len(best[0].true)
    not_ahead = 0
    for idx in resamples(n, n_resamples, seed):
        b = np.mean([t.score(metric, idx) for t in best], axis=0)
        o = np.mean([t.score(metric, idx) for t in other], axis=0)
        not_ahead += int((b <= o + 1e-12).sum())
    return not_ahead / n_resamples


def trial_intervals(rows: pl.DataFrame, predictions: pl.DataFrame | None, metrics: Sequence[str] = METRICS,
                    n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> pl.DataFrame:
    """One line per (trial, metric): the value on the stored predictions and its bootstrap interval."""
    encoded = encode_predictions(predictions)
    ok = rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows
    out = []
    for key in ok["trial_key"].to_list() if "trial_key" in ok.columns else []:
        if key not in encoded:
            continue
        (trial,) = align([encoded[key]])
        if len(trial.true) < 2:
            continue
        whole = np.arange(len(trial.true))[None, :]
        for m in metrics:
            if trial.supports(m):
                low, high = interval(group_distribution([trial], m, n_resamples, seed), level)
                out.append({"trial_key": key, "metric": m, "value": float(trial.score(m, whole)[0]),
                            "ci_low": low, "ci_high": high, "n_items": len(trial.true)})
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
    None when the run has no usable predictions (e.g. matching suites store no labels).
    """
    encoded = encode_predictions(predictions)
    ok = rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows
    ok = ok.filter(pl.col("trial_key").is_in(list(encoded))) if "trial_key" in ok.columns else ok.head(0)
    if ok.is_empty() or not set(group_by) <= set(ok.columns):
        return None
    groups = {g: frame["trial_key"].to_list() for g, frame in ok.group_by(group_by, maintain_order=True)}
    sample = align([encoded[groups[next(iter(groups))][0]]])[0]
    metrics = [m for m in metrics if sample.supports(m)]
    target = target if target is not None and sample.supports(target) else None
    if not metrics and target is None:
        return None
    lines = []
    for g, keys in groups.items():
        trials = align([encoded[k] for k in keys])
        line = dict(zip(group_by, g))
        for m in metrics:
            low, high = interval(group_distribution(trials, m, n_resamples, seed), level) if len(trials[0].true) > 1 \
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
    aligned = align([encoded[k] for k in best_keys + keys])
    if len(aligned[0].true) < 2:
        return None, None
    p = share_not_ahead(aligned[:len(best_keys)], aligned[len(best_keys):], target, n_resamples, seed)
    return p, "≈" if p >= alpha else ""
