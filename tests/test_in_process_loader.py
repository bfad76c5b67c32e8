"""Loaders without workers collate in this process: the same batches, in the same order, with the
same random streams as the DataLoader they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, WeightedRandomSampler

from bench.trial.records import (Collate, CountingBatchSampler, InProcessLoader, PKSampler, Records,
                                 balanced_weights, make_loader)


def _records(n: int = 53):
    rng = np.random.default_rng(0)
    return [{"item_id": f"i{i}", "title": f"title {i}", "image": None, "label": int(rng.integers(4)),
             "group": int(rng.integers(12))} for i in range(n)]


def _feeder(records):
    return {"x": torch.tensor([int(r["item_id"][1:]) for r in records])}


def _data_loader(records, sampler: str, train: bool, seed: int) -> DataLoader:
    """The DataLoader make_loader built before batches were collated in process (num_workers=0)."""
    dataset, collate = Records(records), Collate({"text": _feeder})
    generator = torch.Generator().manual_seed(seed)
    if not train:
        return DataLoader(dataset, batch_size=8, shuffle=False, generator=generator, collate_fn=collate)
    drop_last = len(records) > 8
    if sampler == "pk":
        return DataLoader(dataset, batch_sampler=PKSampler([r["group"] for r in records], 8, 2, seed),
                          collate_fn=collate)
    if sampler == "balanced":
        weights = balanced_weights([r["label"] for r in records])
        ws = WeightedRandomSampler(weights, num_samples=len(records), replacement=True, generator=generator)
        return DataLoader(dataset, batch_sampler=BatchSampler(ws, 8, drop_last), collate_fn=collate)
    return DataLoader(dataset, batch_sampler=BatchSampler(RandomSampler(dataset, generator=generator), 8, drop_last),
                      collate_fn=collate, generator=generator)


def _epochs(loader, n: int = 3):
    """Item ids and a draw from the global RNG after each epoch (what dropout would see next)."""
    out = []
    for _ in range(n):
        out.append([batch.item_ids for batch in loader])
        out.append(float(torch.rand(())))
    return out


@pytest.mark.parametrize("sampler,train", [("random", True), ("pk", True), ("balanced", True), ("random", False)])
def test_in_process_batches_and_random_streams_match_the_data_loader(sampler, train):
    records = _records()
    torch.manual_seed(5)
    expected = _epochs(_data_loader(records, sampler, train, seed=7))
    torch.manual_seed(5)
    loader = make_loader(records, {"text": _feeder}, batch_size=8, train=train, sampler=sampler, seed=7)
    assert isinstance(loader, InProcessLoader)
    got = _epochs(loader)
    assert got == expected
    assert len(loader) == len(got[0])


def test_loaders_with_workers_stay_data_loaders():
    loader = make_loader(_records(), {"text": _feeder}, batch_size=8, train=True, workers=1)
    assert isinstance(loader, DataLoader)
    assert isinstance(loader.batch_sampler, CountingBatchSampler)


def test_in_process_loader_pins_batches_when_asked(monkeypatch):
    pinned = []
    monkeypatch.setattr("bench.api.interfaces.Batch.pin_memory", lambda self: pinned.append(self) or self)
    loader = make_loader(_records(), {"text": _feeder}, batch_size=8, train=False, pin_memory=True)
    batches = list(loader)
    assert pinned == batches and len(batches) == 7


def _table(records, order_seed: int):
    """A cached-feature table over the records in another order, with padded token sequences."""
    from bench.trial.cache import TensorTable

    rng = np.random.default_rng(order_seed)
    shuffled = [records[i] for i in rng.permutation(len(records))]
    lengths = torch.tensor(rng.integers(1, 9, len(shuffled)))
    mask = (torch.arange(8)[None, :] < lengths[:, None]).to(torch.uint8)
    sequence = (torch.randn(len(shuffled), 8, 4) * mask[..., None]).half()
    return TensorTable([r["item_id"] for r in shuffled],
                       {"cached_pooled": torch.randn(len(shuffled), 4), "cached_sequence": sequence, "cached_mask": mask},
                       ("cached_sequence", "cached_mask"))


def _same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.item_ids == y.item_ids and x.titles == y.titles
        assert torch.equal(x.labels, y.labels) and torch.equal(x.groups, y.groups)
        assert x.inputs.keys() == y.inputs.keys()
        for m in x.inputs:
            assert x.inputs[m].keys() == y.inputs[m].keys()
            for k in x.inputs[m]:
                assert x.inputs[m][k].dtype == y.inputs[m][k].dtype and torch.equal(x.inputs[m][k], y.inputs[m][k]), k


@pytest.mark.parametrize("train", [True, False])
def test_batches_served_by_position_equal_those_collated_from_records(train):
    records = _records()
    preprocessors = {"image": _table(records, 1), "text": _feeder}
    loader = make_loader(records, preprocessors, batch_size=8, train=train, seed=3)
    assert loader.by_position is not None
    torch.manual_seed(0)
    served = list(loader)
    collate = Collate(preprocessors)
    if train:  # the same index batches, collated from record lists
        expected = [collate([records[i] for i in batch]) for batch in loader.batch_sampler.yielded]
    else:
        expected = list(DataLoader(Records(records), batch_size=8, shuffle=False, collate_fn=collate))
    _same_batches(served, expected)
    longest = [int(b.inputs["image"]["cached_mask"].sum(1).max()) for b in served]
    assert [b.inputs["image"]["cached_sequence"].shape[1] for b in served] == longest  # trimmed per batch
    assert served[0].inputs["image"]["cached_sequence"].dtype == torch.float32  # half precision upcast
