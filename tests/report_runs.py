"""Hand-made run folders for the report tests: real row and prediction files, no training.

Rows get their metrics from the real metric function on the same predictions that are stored,
so anything recomputed from predictions must agree with the rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml

from bench.trial.evaluate import Predictions
from bench.metrics.classification import classification_metrics
from bench.metrics.retrieval import choose_threshold, per_query_metrics, retrieval_metrics
from bench.reporting.results import RunDir
from bench.trial.outputs import prediction_table

N_LABELS = 6
LABELS = [f"label{i}" for i in range(N_LABELS)]


def noisy_predictions(true: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Predictions that are right on about ``accuracy`` of the items, otherwise another label."""
    rng = np.random.default_rng(seed)
    wrong = (true + rng.integers(1, N_LABELS, len(true))) % N_LABELS
    return np.where(rng.random(len(true)) < accuracy, true, wrong)


def scores_for(pred: np.ndarray) -> np.ndarray:
    """Scores whose argmax is ``pred`` and whose second choice is the next label."""
    scores = np.full((len(pred), N_LABELS), 0.01)
    scores[np.arange(len(pred)), (pred + 1) % N_LABELS] = 0.3
    scores[np.arange(len(pred)), pred] = 0.6
    return scores


def trial(key: str, axes: dict, seed: int, true: np.ndarray, pred: np.ndarray, item_offset: int = 0,
          **extra) -> dict:
    return {"key": key, "axes": axes, "seed": seed, "true": np.asarray(true), "pred": np.asarray(pred),
            "item_offset": item_offset, "extra": extra}


def write_run(path: Path, trials: list[dict], suite: dict | None = None, failed: list[dict] | None = None) -> Path:
    """A run folder with rows/, predictions/ and (optionally) the suite copy that sets the leaderboard."""
    run = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    for t in trials:
        scores = scores_for(t["pred"])
        metrics = classification_metrics(t["true"], scores, top_k=5)
        row = {"trial_key": t["key"], **t["axes"], "seed": t["seed"], "status": "ok", "error": "",
               **metrics, "train_samples_per_s": 100.0, "wall_s": 1.0, "n_params": 1000, **t["extra"]}
        order = np.argsort(-scores, axis=1)[:, :5]
        n = len(t["true"])
        preds = pl.DataFrame({
            "trial_key": [t["key"]] * n,
            "item_id": [f"item{i + t['item_offset']}" for i in range(n)],
            "group": list(range(n)),
            "true_label": [LABELS[i] for i in t["true"]],
            "pred_label": [LABELS[i] for i in t["pred"]],
            "topk_labels": [[LABELS[i] for i in r] for r in order],
            "topk_scores": [[float(scores[j, i]) for i in r] for j, r in enumerate(order)],
        })
        run.write_row(row, preds)
    for f in failed or []:
        run.write_row({"trial_key": f["key"], **f["axes"], "seed": f.get("seed", 0), "status": "failed",
                       "error": f.get("error", "boom")})
    if suite is not None:
        (path / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    run.consolidate()
    return path


def suite_copy(name: str = "handmade", matrix: dict | None = None, **leaderboard) -> dict:
    """A minimal suite copy: only what the leaderboard reads (the trial section is never expanded)."""
    return {"name": name, "trial": {}, "matrix": matrix or {}, "leaderboard": leaderboard}


def matching_run(path: Path, groups: dict[str, list[float]]) -> Path:
    """Rows of a matching suite (retrieval metrics, predictions without labels), one per seed value."""
    run = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    for method, ndcgs in groups.items():
        for seed, ndcg in enumerate(ndcgs):
            key = f"{method}-{seed}"
            row = {"trial_key": key, "method": method, "seed": seed, "status": "ok", "error": "",
                   "ndcg@10": ndcg, "mar@10": ndcg - 0.1, "p@10": ndcg - 0.2, "map@10": ndcg - 0.15,
                   "mrr@10": ndcg - 0.02, "recall@1": ndcg - 0.1, "f1": ndcg - 0.05, "f1_all": ndcg - 0.03,
                   "train_samples_per_s": 50.0 + seed, "wall_s": 2.0, "n_params": 500}
            run.write_row(row, pl.DataFrame({"trial_key": [key] * 3, "item_id": ["a", "b", "c"], "group": [0, 0, 1]}))
    (path / "suite.yaml").write_text(yaml.safe_dump(suite_copy(
        "matching", {"method": list(groups), "seed": [0, 1]}, group_by=["method"], sort="f1",
        metrics=["f1", "ndcg@10", "mar@10", "p@10", "map@10"])), encoding="utf-8")
    run.consolidate()
    return path


def clustered_embeddings(n_products: int, per_product: int, noise: float, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Listings around one random centre per product: more noise, harder matching."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(rng.normal(size=(n_products, 16)), per_product, axis=0)
    groups = np.repeat(np.arange(n_products), per_product)
    return torch.tensor(centres + noise * rng.normal(size=centres.shape), dtype=torch.float32), groups


def retrieval_run(path: Path, noise: dict[str, float], n_products: int = 60, seeds: tuple[int, ...] = (0, 1),
                  test_seed: int = 100) -> Path:
    """A matching run whose rows and stored per-query values come from the real retrieval metrics.

    Every method is tested on the same test items (one draw of products); each seed adds its own
    noise, as a retrained model would; the threshold is chosen on a separate dev draw.
    """
    run = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    base, groups = clustered_embeddings(n_products, 3, 0.0, test_seed)
    for m, (method, level) in enumerate(noise.items()):
        for seed in seeds:
            key = f"{method}-{seed}"
            rng = np.random.default_rng(1000 * m + seed)
            test_emb = base + level * torch.tensor(rng.normal(size=tuple(base.shape)), dtype=torch.float32)
            dev_emb, dev_groups = clustered_embeddings(20, 3, level, 500 + seed)
            threshold = choose_threshold(dev_emb, dev_groups)
            metrics = retrieval_metrics(test_emb, groups, k=10, threshold=threshold)
            row = {"trial_key": key, "method": method, "seed": seed, "status": "ok", "error": "", **metrics,
                   "train_samples_per_s": 50.0, "wall_s": 2.0, "n_params": 500}
            test = Predictions([f"item{i}" for i in range(len(groups))], torch.full((len(groups),), -1),
                               torch.as_tensor(groups), test_emb, None)
            per_query = per_query_metrics(test_emb, groups, k=10, threshold=threshold)
            run.write_row(row, prediction_table(test, [], key, per_query=per_query))
    (path / "suite.yaml").write_text(yaml.safe_dump(suite_copy(
        "retrieval", {"method": list(noise), "seed": list(seeds)}, group_by=["method"], sort="mar@10",
        metrics=["mar@10", "p@10", "map@10", "mrr@10", "recall@1", "ndcg@10", "f1", "f1_all"])), encoding="utf-8")
    run.consolidate()
    return path
