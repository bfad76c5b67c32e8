"""From catalogue rows to batches: records, samplers, and the collate that runs preprocessing."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bench.interfaces import Batch


def to_records(items: pl.DataFrame, label_index: dict[str, int], group_index: dict[str, int]) -> list[dict[str, Any]]:
    """Plain dicts (cheap to send to DataLoader workers) with label/group indices (-1 = unknown)."""
    out = []
    for row in items.iter_rows(named=True):
        out.append({"item_id": row["item_id"], "title": row["title"], "image": row["image"],
                    "label": label_index.get(row["label"], -1) if row["label"] is not None else -1,
                    "group": group_index.get(row["group"], -1) if row["group"] is not None else -1})
    return out


class Records(Dataset):
    def __init__(self, records: list[dict[str, Any]]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.records[idx]


class Collate:
    """Runs each needed encoder's preprocess on a list of records (inside the worker)."""

    def __init__(self, preprocessors: dict[str, Callable[[list[dict]], dict[str, torch.Tensor]]]):
        self.preprocessors = preprocessors

    def __call__(self, records: list[dict[str, Any]]) -> Batch:
        inputs = {m: fn(records) for m, fn in self.preprocessors.items()}
        return Batch(item_ids=[r["item_id"] for r in records], inputs=inputs,
                     labels=torch.tensor([r["label"] for r in records], dtype=torch.long),
                     groups=torch.tensor([r["group"] for r in records], dtype=torch.long),
                     titles=[r["title"] for r in records])


class PKSampler(Sampler[list[int]]):
    """Batches of P groups x K items so in-batch mining always finds positives.

    Groups with fewer than K items are sampled with replacement inside the group; items
    without a group fill the batches as extra negatives.
    """

    def __init__(self, groups: list[int], batch_size: int, k: int, seed: int):
        self.k = k
        self.p = max(2, batch_size // k)
        self.seed = seed
        self.epoch = 0
        by_group: dict[int, list[int]] = {}
        for idx, g in enumerate(groups):
            if g >= 0:
                by_group.setdefault(g, []).append(idx)
        self.by_group = [v for v in by_group.values()]
        self.n_batches = max(1, math.ceil(len(groups) / (self.p * self.k)))

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        multi = [g for g in self.by_group if len(g) >= 2] or self.by_group
        for _ in range(self.n_batches):
            chosen = rng.choice(len(multi), size=min(self.p, len(multi)), replace=False)
            batch = []
            for gi in chosen:
                members = multi[gi]
                batch.extend(rng.choice(members, size=self.k, replace=len(members) < self.k).tolist())
            yield batch


def balanced_weights(labels: list[int]) -> torch.Tensor:
    counts = np.bincount([l for l in labels if l >= 0] or [0])
    return torch.tensor([1.0 / counts[l] if l >= 0 and counts[l] else 0.0 for l in labels], dtype=torch.double)


def make_loader(records: list[dict[str, Any]], preprocessors: dict[str, Callable], *, batch_size: int,
                train: bool, sampler: str = "random", pk_items: int = 2, seed: int = 0, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """One DataLoader for training (shuffled / P x K / class-balanced) or evaluation (in order)."""
    collate = Collate(preprocessors)
    dataset = Records(records)
    common = dict(collate_fn=collate, num_workers=workers, pin_memory=pin_memory,
                  persistent_workers=False)
    if workers:
        common["multiprocessing_context"] = "fork" if hasattr(__import__("os"), "fork") else None
    if not train:  # its own generator: evaluating between epochs must not move the training RNG
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(seed),
                          **common)
    generator = torch.Generator().manual_seed(seed)
    if sampler == "pk":
        return DataLoader(dataset, batch_sampler=PKSampler([r["group"] for r in records], batch_size, pk_items, seed), **common)
    if sampler == "balanced":
        weights = balanced_weights([r["label"] for r in records])
        ws = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(records), replacement=True, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=ws, drop_last=len(records) > batch_size, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                      drop_last=len(records) > batch_size, **common)
