"""Labelled-pair data for the pairs task (plugins/mic_bench_plugins/tasks/pairs.py): pair batches, pair splits, cosine scores.

Pair-labelled benchmarks (DeepMatcher, WDC Products) split pairs, not items: one item may sit
in a train pair and in a test pair. So:
- a split's items are the items its pairs name; only the train pairs' items reach fitted
  encoders (``Encoder.fit``) and the training batches, and only train pairs' labels reach an
  objective (a pair batch carries nothing else);
- the model selection metric (default ``dev_pair_ap``) and the F1 threshold come from the dev
  pairs; test pairs are scored once, at the end.

A training batch (``PairBatch``) holds the left items then the right items, so the trial's
encoders and fusion embed them as for any batch; item i and item i + P form pair i.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.data.catalog import Catalog
from bench.config.schema import TrialConfig
from bench.errors import BenchError
from bench.api.interfaces import PAIRS, Batch, TaskInfo
from bench.data.pair_table import PAIR_SPLITS
from bench.trial.evaluate import Predictions
from bench.trial.prepare import TrialData, load_catalog
from bench.trial.records import make_loader, to_records



@dataclass
class PairBatch(Batch):
    """Items of P pairs: the P left items, then the P right items; ``pair_labels`` [P] (1 = match)."""

    pair_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def to(self, device: torch.device, non_blocking: bool = False) -> "PairBatch":
        moved = super().to(device, non_blocking)
        return PairBatch(moved.item_ids, moved.inputs, moved.labels, moved.groups, moved.titles,
                         self.pair_labels.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "PairBatch":
        pinned = super().pin_memory()
        return PairBatch(pinned.item_ids, pinned.inputs, pinned.labels, pinned.groups, pinned.titles,
                         self.pair_labels.pin_memory())

    def __len__(self) -> int:  # samples are pairs (run_stage counts train_samples_per_s in pairs)
        return len(self.pair_labels)

    def halves(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(left rows, right rows) of a per-item tensor of this batch."""
        n = len(self.pair_labels)
        return tensor[:n], tensor[n:]


class PairCollate:
    """Runs the encoders' preprocess over a batch's left items, then its right items."""

    def __init__(self, preprocessors):
        self.preprocessors = preprocessors

    def __call__(self, pairs: list[dict[str, Any]]) -> PairBatch:
        records = [p["left"] for p in pairs] + [p["right"] for p in pairs]
        inputs = {m: fn(records) for m, fn in self.preprocessors.items()}
        unknown = torch.full((len(records),), -1, dtype=torch.long)
        return PairBatch(item_ids=[r["item_id"] for r in records], inputs=inputs, labels=unknown, groups=unknown.clone(),
                         titles=[r["title"] for r in records],
                         pair_labels=torch.tensor([p["label"] for p in pairs], dtype=torch.long))


def make_pair_loader(pairs: list[dict], preprocessors, *, batch_size: int, seed: int, workers: int = 0,
                     pin_memory: bool = False) -> DataLoader:
    """Shuffled batches of train pairs (batch_size pairs, so 2 x batch_size items)."""
    return make_loader(pairs, preprocessors, batch_size=batch_size, train=True, seed=seed, workers=workers,
                       pin_memory=pin_memory, collate=PairCollate(preprocessors))


@dataclass
class PairTrialData(TrialData):
    """TrialData whose splits hold the items each split's pairs name; ``pairs`` per split as
    (left_id, right_id, label) tuples."""

    pairs: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)


def take_pairs(frame: pl.DataFrame, cap: int | None, fraction: float, seed: int) -> pl.DataFrame:
    """A seeded sample: at most ``cap`` pairs (--subset), and ``fraction`` of them (train only)."""
    if cap is not None and frame.height > cap:
        frame = frame.sample(cap, seed=seed, shuffle=False)
    if fraction < 1.0:
        frame = frame.sample(max(1, round(frame.height * fraction)), seed=seed + 1, shuffle=False)
    return frame


def prepare_pair_data(cfg: TrialConfig, ctx, catalog: Catalog | None = None) -> PairTrialData:
    catalog = catalog or load_catalog(cfg, ctx)
    if PAIRS not in catalog.tasks:
        raise BenchError(f"dataset '{cfg.dataset.name}' has no labelled pairs in train and test "
                         f"(it supports: {', '.join(sorted(catalog.tasks)) or 'none'})", field="trial.task",
                         fix="task pairs needs a pair-labelled dataset (deepmatcher, wdc_products, or synthetic_catalog "
                             "with pairs: true); for this dataset use task: " +
                             (sorted(catalog.tasks)[0] if catalog.tasks else "classification"))
    records = {r["item_id"]: r for r in to_records(catalog.items, {}, {})}
    pairs, splits = {}, {}
    for split in PAIR_SPLITS:
        frame = catalog.pairs.filter(pl.col("split") == split)
        frame = take_pairs(frame, cfg.subset, cfg.finetune_fraction if split == "train" else 1.0, cfg.splits.seed)
        pairs[split] = list(zip(frame["left_id"].to_list(), frame["right_id"].to_list(), frame["label"].to_list()))
        ids = dict.fromkeys(i for left, right, _ in pairs[split] for i in (left, right))
        splits[split] = [records[i] for i in ids]
    splits["ssl"] = []
    if not any(label == 1 for *_, label in pairs["train"]):
        raise BenchError("no train pair is a match (label 1)", field="trial.dataset",
                         fix="the training pairs need matches as well as non-matches (a larger --subset may help)")
    return PairTrialData(catalog, TaskInfo(PAIRS, [], has_groups=False), splits, None, pairs)


def pair_similarities(predictions: Predictions, pairs: list[tuple[str, str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity of each pair's two embeddings, labels)."""
    index = {item: i for i, item in enumerate(predictions.item_ids)}
    emb = F.normalize(predictions.embedding.float(), dim=-1)
    left = emb[[index[a] for a, _, _ in pairs]]
    right = emb[[index[b] for _, b, _ in pairs]]
    return (left * right).sum(1).numpy().astype(float), np.array([label for *_, label in pairs], dtype=int)


