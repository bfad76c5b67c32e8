"""From catalogue rows to batches: records, samplers, and the collate that runs preprocessing."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch
from torch.utils.data import (BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler,
                              WeightedRandomSampler)

from bench.errors import BenchError
from bench.api.interfaces import Batch
from bench.trial.cache import TensorTable


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

    def for_records(self, records: list[dict[str, Any]]) -> IndexedCollate:
        """The same batches, named by position in ``records``."""
        return IndexedCollate(self.preprocessors, records)

    def __call__(self, records: list[dict[str, Any]]) -> Batch:
        inputs = {m: fn(records) for m, fn in self.preprocessors.items()}
        return Batch(item_ids=[r["item_id"] for r in records], inputs=inputs,
                     labels=torch.tensor([r["label"] for r in records], dtype=torch.long),
                     groups=torch.tensor([r["group"] for r in records], dtype=torch.long),
                     titles=[r["title"] for r in records])


class IndexedCollate:
    """``Collate`` for batches named by position in one fixed record list, as an in-process loader
    serves them: labels, groups and each cached table's rows are looked up once, so a batch of
    cached features costs a few ``index_select`` calls, as in a hand-written loop."""

    def __init__(self, preprocessors: dict[str, Callable[[list[dict]], dict[str, torch.Tensor]]],
                 records: list[dict[str, Any]]):
        self.preprocessors = preprocessors
        self.records = records
        self.item_ids = [r["item_id"] for r in records]
        self.titles = [r["title"] for r in records]
        self.labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
        self.groups = torch.tensor([r["group"] for r in records], dtype=torch.long)
        self.rows = {m: fn.rows_of(records) for m, fn in preprocessors.items() if isinstance(fn, TensorTable)}

    def __call__(self, indices: list[int]) -> Batch:
        positions = torch.tensor(indices, dtype=torch.long)
        inputs = {m: (fn.take(self.rows[m].index_select(0, positions)) if m in self.rows
                      else fn([self.records[i] for i in indices])) for m, fn in self.preprocessors.items()}
        return Batch(item_ids=[self.item_ids[i] for i in indices], inputs=inputs,
                     labels=self.labels.index_select(0, positions), groups=self.groups.index_select(0, positions),
                     titles=[self.titles[i] for i in indices])


class PKSampler(Sampler[list[int]]):
    """Batches of P groups x K listings, so in-batch mining always finds positives, that serve
    every item at least once per epoch.

    Each epoch every group with 2+ listings is shuffled and cut into chunks of K (a short last
    chunk is topped up with other listings of its group, with replacement when the group has
    fewer than K). Chunks are dealt to the batches with a group's chunks in different batches;
    batches short of P groups get a chunk of a random other group. Items without a group, or
    alone in theirs, are dealt out as extra negatives. A batch holds about ``batch_size`` items:
    P is the number of chunks per batch that lets chunks and extras run out together (at least 2).
    """

    def __init__(self, groups: list[int], batch_size: int, k: int, seed: int):
        self.k = k
        self.seed = seed
        self.epoch = 0
        by_group: dict[int, list[int]] = {}
        for idx, g in enumerate(groups):
            if g >= 0:
                by_group.setdefault(g, []).append(idx)
        self.multi = [members for members in by_group.values() if len(members) >= 2]
        if not self.multi:
            raise BenchError("P x K batches need products with 2+ listings in the training data; it has none",
                             field="sampler", fix="use sampler: random, or data whose group column links listings")
        self.extras = [idx for idx, g in enumerate(groups) if g < 0 or len(by_group[g]) < 2]
        n_chunks = sum(math.ceil(len(m) / k) for m in self.multi)
        least = min(2, len(self.multi))  # groups per batch, however few chunks there are
        self.n_batches = max(1, math.ceil((n_chunks * k + len(self.extras)) / batch_size))
        if self.extras and batch_size > least * k:  # batches of mostly extras: leave room for the least groups
            self.n_batches = max(self.n_batches, math.ceil(len(self.extras) / (batch_size - least * k)))
        self.p = max(least, math.ceil(n_chunks / self.n_batches))

    def __len__(self) -> int:
        return self.n_batches

    def _chunk(self, members: list[int], rng: np.random.Generator) -> list[int]:
        return rng.choice(members, size=self.k, replace=len(members) < self.k).tolist()

    def _other_group(self, taken: set[int], rng: np.random.Generator) -> int:
        """A random group not yet in the batch (any group once all are)."""
        for _ in range(8):
            gi = int(rng.integers(len(self.multi)))
            if gi not in taken:
                return gi
        free = [gi for gi in range(len(self.multi)) if gi not in taken]
        return int(rng.choice(free)) if free else int(rng.integers(len(self.multi)))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        chunks: list[tuple[int, list[int]]] = []
        for gi in rng.permutation(len(self.multi)):
            members = rng.permutation(self.multi[gi]).tolist()
            for start in range(0, len(members), self.k):
                chunk = members[start:start + self.k]
                if len(chunk) < self.k:
                    others = [m for m in members if m not in chunk]
                    chunk += rng.choice(others or chunk, size=self.k - len(chunk),
                                        replace=len(others) < self.k - len(chunk)).tolist()
                chunks.append((int(gi), chunk))
        batches: list[list[int]] = [[] for _ in range(self.n_batches)]
        in_batch: list[list[int]] = [[] for _ in range(self.n_batches)]  # the group of each chunk
        for j, (gi, chunk) in enumerate(chunks):
            batches[j % self.n_batches] += chunk
            in_batch[j % self.n_batches].append(gi)
        for b in range(self.n_batches):
            while len(in_batch[b]) < self.p:
                gi = self._other_group(set(in_batch[b]), rng)
                batches[b] += self._chunk(self.multi[gi], rng)
                in_batch[b].append(gi)
        for j, idx in enumerate(rng.permutation(self.extras).tolist()):
            batches[j % self.n_batches].append(idx)
        for b in rng.permutation(self.n_batches):
            yield batches[b]


class CountingBatchSampler(Sampler[list[int]]):
    """Passes a batch sampler's batches through and keeps them in order, so the trainer can tell
    which items its steps were served (batches a loader fetched ahead and never used excluded)."""

    def __init__(self, inner):
        self.inner = inner
        self.yielded: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.inner:
            self.yielded.append(list(batch))
            yield batch

    def served(self, steps: int) -> set[int]:
        """Indices of the items in the first ``steps`` batches yielded (over all epochs)."""
        return {idx for batch in self.yielded[:steps] for idx in batch}


def served_item_ids(loader: DataLoader, steps: int) -> set[str]:
    """Item ids of the records the first ``steps`` batches of a training loader held."""
    records = loader.dataset.records
    return {records[idx]["item_id"] for idx in loader.batch_sampler.served(steps)}


def seen_share(served: set[str], records: list[dict[str, Any]]) -> float | None:
    """Share of these records that training served at least once (None without records)."""
    ids = {r["item_id"] for r in records}
    return round(len(ids & served) / len(ids), 4) if ids else None


def balanced_weights(labels: list[int]) -> torch.Tensor:
    counts = np.bincount([l for l in labels if l >= 0] or [0])
    return torch.tensor([1.0 / counts[l] if l >= 0 and counts[l] else 0.0 for l in labels], dtype=torch.double)


class InProcessLoader:
    """The batches ``DataLoader(num_workers=0)`` yields for a batch sampler, without its per-batch
    machinery (fetcher, profiler scope, pin-memory dispatch): on cached features a training step
    is about a millisecond, and that machinery was a tenth of it.

    Same order and same random streams as the DataLoader it replaces: each pass first draws the
    DataLoader's base seed (from ``generator``, or torch's global RNG when None), then iterates the
    sampler and collates the records of each batch in this process.
    """

    def __init__(self, dataset: Records, batch_sampler: Sampler[list[int]], collate_fn: Callable[[list], Any],
                 generator: torch.Generator | None = None, pin_memory: bool = False):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn
        self.generator = generator
        self.pin_memory = pin_memory
        # a collate that can serve batches by position (Collate.for_records) does; any other gets records
        by_position = getattr(collate_fn, "for_records", None)
        self.by_position = by_position(dataset.records) if by_position is not None else None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # DataLoader's base seed
        records = self.dataset.records
        for indices in self.batch_sampler:
            if self.by_position is not None:
                batch = self.by_position(indices)
            else:
                batch = self.collate_fn([records[i] for i in indices])
            yield batch.pin_memory() if self.pin_memory else batch


def make_loader(records: list[dict[str, Any]], preprocessors: dict[str, Callable], *, batch_size: int,
                train: bool, sampler: str = "random", pk_items: int = 2, seed: int = 0, workers: int = 0,
                pin_memory: bool = False, collate: Callable[[list], Any] | None = None) -> DataLoader | InProcessLoader:
    """Batches for training (shuffled / P x K / class-balanced) or evaluation (in order): a
    DataLoader when workers preprocess, else the same batches collated in this process.

    A training loader's batches come through a CountingBatchSampler (see served_item_ids).
    ``collate`` turns a list of records into a batch (default: ``Collate(preprocessors)``).
    """
    collate = collate or Collate(preprocessors)
    dataset = Records(records)
    common = dict(collate_fn=collate, num_workers=workers, pin_memory=pin_memory,
                  persistent_workers=False)
    if workers:
        common["multiprocessing_context"] = "fork" if hasattr(__import__("os"), "fork") else None
    if not train:  # its own generator: evaluating between epochs must not move the training RNG
        generator = torch.Generator().manual_seed(seed)
        if not workers:
            return InProcessLoader(dataset, BatchSampler(SequentialSampler(dataset), batch_size, False), collate,
                                   generator, pin_memory)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=generator, **common)
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(records) > batch_size
    if sampler == "pk":
        batches = PKSampler([r["group"] for r in records], batch_size, pk_items, seed)
    elif sampler == "balanced":
        weights = balanced_weights([r["label"] for r in records])
        if not float(weights.sum()):
            raise BenchError("sampler: balanced draws items by label, but no training item has one", field="sampler",
                             fix="use sampler: random (or auto) for data without labels")
        ws = WeightedRandomSampler(weights, num_samples=len(records), replacement=True, generator=generator)
        batches = BatchSampler(ws, batch_size, drop_last)
    else:
        batches = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last)
        # DataLoader(shuffle=True, generator=...) also drew the workers' base seed from it: same order as before
        common["generator"] = generator
    if not workers:
        return InProcessLoader(dataset, CountingBatchSampler(batches), collate, common.get("generator"), pin_memory)
    return DataLoader(dataset, batch_sampler=CountingBatchSampler(batches), **common)
