"""What a trial keeps beside its row: retrieval figures with per-query values, and the prediction table."""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from bench.config.schema import TrialConfig
from bench.metrics.retrieval import choose_threshold, per_query_metrics, query_means
from bench.trial.evaluate import Predictions


def retrieval_embeddings(cfg: TrialConfig, p: Predictions):
    """The kinds' embeddings (scored by their max) or the one embedding, as eval.retrieval says."""
    if cfg.eval.retrieval == "max_of_kinds" and p.kinds:
        return p.kinds
    return p.embedding


def retrieval_figures(cfg: TrialConfig, dev: Predictions | None, test: Predictions
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Retrieval row metrics on test, and each test query's values (stored for bootstrap intervals);
    the F1 threshold is chosen on dev, and when it cannot be, f1 / f1_all / f1_threshold are null
    and ``f1_note`` says why (never a default threshold)."""
    threshold, note = None, None
    if dev is None:
        note = "no dev split: the F1 threshold is chosen on dev"
    elif len(dev.item_ids) < 2:
        note = f"dev has {len(dev.item_ids)} item(s): too few to choose the F1 threshold"
    else:
        threshold = choose_threshold(retrieval_embeddings(cfg, dev), dev.groups.numpy())
        if threshold is None:
            note = "no dev item has another item of its product: the F1 threshold cannot be chosen"
    per_query = per_query_metrics(retrieval_embeddings(cfg, test), test.groups.numpy(), k=cfg.eval.k,
                                  threshold=threshold)
    out: dict[str, Any] = query_means(per_query)
    if threshold is not None:
        out["f1_threshold"] = float(threshold)
    if out.get(f"ndcg@{cfg.eval.k}") is None:
        out["retrieval_note"] = "no test item has another item of its product: nothing to retrieve"
    if threshold is None:
        out.update(f1=None, f1_all=None, f1_threshold=None, f1_note=note)
    return out, per_query


def prediction_table(p: Predictions, label_names: list[str], key: str, top_k: int = 5,
                     per_query: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    """Test predictions kept beside the row: later analyses need no retraining.

    ``per_query``: each query's value of a retrieval row metric, in a column of the metric's name
    (null where the query is left out), so intervals can be recomputed from the stored table.
    """
    frame = {"trial_key": [key] * len(p.item_ids), "item_id": p.item_ids, "group": p.groups.tolist()}
    for name, values in (per_query or {}).items():
        frame[name] = pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
    if p.logits is not None and label_names:
        probs = torch.softmax(p.logits, -1)
        k = min(top_k, probs.shape[1])
        top = probs.topk(k, dim=1)
        frame["true_label"] = [label_names[i] if i >= 0 else None for i in p.labels.tolist()]
        frame["pred_label"] = [label_names[i] for i in top.indices[:, 0].tolist()]
        frame["topk_labels"] = [[label_names[i] for i in row] for row in top.indices.tolist()]
        frame["topk_scores"] = [[round(s, 5) for s in row] for row in top.values.tolist()]
    return pl.DataFrame(frame)
