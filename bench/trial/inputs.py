"""What a trial's DataLoaders feed each encoder: raw preprocessing, cached preprocessed inputs,
or cached features of a frozen encoder (then the encoder itself never runs during training)."""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench.trial.cache import TOKEN_AXIS_KEYS, CacheStore, TensorTable, batched, cache_key, stack_padded
from bench.trial.device import autocast
from bench.api.interfaces import Encoder
from bench.trial.model import EXTRA_PREFIX

PREPROCESS_CACHE_MAX_MB = float(os.environ.get("MIC_BENCH_PREPROCESS_CACHE_MAX_MB", "2048"))
SEQUENCE_KEYS = ("cached_sequence", "cached_mask")
# Part of every feature key: entries of an older layout (one per `sequence` flag, float32) simply miss.
FEATURES_LAYOUT = "v2: sequence float16 when it fits, pooled and extras float32"
FLOAT16_MAX = torch.finfo(torch.float16).max


def half_if_fits(tensor: torch.Tensor) -> torch.Tensor:
    """float16 when every value is finite and inside float16's range, else float32 unchanged.

    float16 keeps 11 significant bits (relative error <= 2**-11), against bfloat16's 8; range is
    the only thing it can lose, so an entry that would overflow stays float32.
    """
    tensor = tensor.float()
    if tensor.numel():
        low, high = (float(v) for v in torch.aminmax(tensor))  # NaN propagates; no tensor-sized temporaries
        if not (math.isfinite(low) and math.isfinite(high)) or max(-low, high) > FLOAT16_MAX:
            return tensor
    return tensor.half()


def items_digest(records: list[dict]) -> str:
    return hashlib.sha256("\n".join(r["item_id"] for r in records).encode()).hexdigest()[:16]


def weights_digest(module: torch.nn.Module) -> str:
    """Hash of the actual weights, so a changed checkpoint never reuses stale features."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass
class TrialInputs:
    """Builds (or reads from the cache) the per-item tensors of one trial."""

    store: CacheStore | None
    dataset_fingerprint: str
    device: torch.device
    amp: str = "off"
    batch_size: int = 64
    seconds: float = 0.0
    cpus: float = 1.0  # the trial's CPU share: decode workers for a feature build beside the forward pass
    _weights: dict[int, str] = field(default_factory=dict)
    # feature tables read in this trial: dev features serve an evaluation after every epoch
    _features: dict[tuple[str, bool], TensorTable] = field(default_factory=dict)
    _depth: int = 0  # features() builds an inputs table inside its own: time only the outer call

    def _table(self, key: str, records: list[dict], compute_batch: Callable[[list[dict]], dict],
               finish: Callable[[dict], dict] = lambda tensors: tensors,
               select: Callable[[str], bool] | None = None) -> TensorTable:
        def compute():
            chunks = [compute_batch(chunk) for chunk in batched(records, self.batch_size)]
            padded = tuple(k for k in chunks[0] if k in TOKEN_AXIS_KEYS)
            return finish(stack_padded(chunks, padded))

        start = time.perf_counter()
        self._depth += 1
        try:
            tensors = self.store.get_or_compute(key, compute, select=select)
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - start
        return TensorTable([r["item_id"] for r in records], tensors, tuple(k for k in tensors if k in TOKEN_AXIS_KEYS))

    def inputs_key(self, modality: str, encoder: Encoder, records: list[dict]) -> str:
        """The cache key of the preprocessed inputs of ``records`` for ``encoder``."""
        return cache_key(kind="inputs", dataset=self.dataset_fingerprint, modality=modality,
                         encoder=type(encoder).__qualname__, preprocess=encoder.preprocess_fingerprint(),
                         items=items_digest(records))

    def inputs(self, modality: str, encoder: Encoder, records: list[dict]) -> Callable[[list[dict]], dict]:
        """Preprocessed inputs, cached when a sample batch says the whole table stays under the size cap."""
        if self.store is None or not records:
            return encoder.preprocess
        key = self.inputs_key(modality, encoder, records)
        if not self.store.path(key).exists():  # the size check only matters before an entry is built
            sample = encoder.preprocess(records[: min(8, len(records))])
            per_item = sum(t.element_size() * t[0].numel() for t in sample.values()) if sample else 0
            if per_item * len(records) / 2**20 > PREPROCESS_CACHE_MAX_MB:
                return encoder.preprocess
        return self._table(key, records, encoder.preprocess)

    def feature_source(self, modality: str, encoder: Encoder, records: list[dict]) -> Callable[[list[dict]], dict]:
        """What feeds a feature build: an existing inputs entry (a read beats decoding), else the
        encoder's preprocessing run ahead in DataLoader workers when the trial has spare CPUs.

        No inputs entry is built for it: the features are the cached product, and a table of
        224-px pixels (~600 kB an image) would cost more to write and checksum than to decode.
        """
        if self.store is not None and self.store.path(self.inputs_key(modality, encoder, records)).exists():
            return self.inputs(modality, encoder, records)
        workers = decode_workers(self.cpus)
        if not workers:
            return encoder.preprocess
        return PrefetchedPreprocess(encoder.preprocess, records, self.batch_size, workers)

    def features(self, modality: str, encoder: Encoder, records: list[dict], with_sequence: bool):
        """Outputs of a frozen encoder (eval mode, no grad), computed once per content and weights.

        One entry serves every reader: it always holds sequence + mask (the sequence in half
        precision when it fits) beside pooled and extras; a pooled-only reader loads just those.
        """
        if id(encoder) not in self._weights:
            self._weights[id(encoder)] = weights_digest(encoder)
        key = cache_key(kind="features", layout=FEATURES_LAYOUT, dataset=self.dataset_fingerprint,
                        modality=modality, encoder=type(encoder).__qualname__, weights=self._weights[id(encoder)],
                        preprocess=encoder.preprocess_fingerprint(), items=items_digest(records), amp=self.amp)
        if (key, with_sequence) in self._features:
            return self._features[key, with_sequence]
        source = None

        @torch.no_grad()
        def encode(chunk: list[dict]) -> dict[str, torch.Tensor]:
            nonlocal source
            if source is None:  # only on a cache miss: a hit needs no inputs at all
                source = self.feature_source(modality, encoder, records)
            was_training = encoder.training
            encoder.eval()
            inputs = {k: v.to(self.device) for k, v in source(chunk).items()}
            with autocast(self.device, self.amp):
                out = encoder(inputs)
            encoder.train(was_training)
            result = {"cached_pooled": out.pooled.float().cpu()}
            result.update({f"{EXTRA_PREFIX}{k}": v.float().cpu() for k, v in out.extras.items()})
            result["cached_sequence"] = out.sequence.float().cpu()
            result["cached_mask"] = out.mask.to(torch.uint8).cpu()
            return result

        def finish(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {**tensors, "cached_sequence": half_if_fits(tensors["cached_sequence"])}

        select = None if with_sequence else (lambda name: name not in SEQUENCE_KEYS)
        try:
            table = self._features[key, with_sequence] = self._table(key, records, encode, finish, select)
            return table
        finally:
            if isinstance(source, PrefetchedPreprocess):
                source.close()


def decode_workers(cpus: float) -> int:
    """DataLoader workers that decode beside the forward pass: one per CPU beyond the first."""
    return max(0, int(cpus) - 1)


class PrefetchedPreprocess:
    """``preprocess`` over ``records`` in consecutive chunks of ``batch_size``, computed ahead by
    DataLoader workers; called with each chunk in order (as ``TrialInputs._table`` does), it returns
    that chunk's inputs (checked by item id)."""

    def __init__(self, preprocess: Callable[[list[dict]], dict], records: list[dict], batch_size: int, workers: int):
        from torch.utils.data import DataLoader

        from bench.trial.records import Records

        self.loader = DataLoader(Records(records), batch_size=batch_size, shuffle=False, num_workers=workers,
                                 collate_fn=_IdsAnd(preprocess), multiprocessing_context="fork",
                                 prefetch_factor=2)
        self._batches = iter(self.loader)

    def __call__(self, chunk: list[dict]) -> dict[str, torch.Tensor]:
        ids, inputs = next(self._batches)
        if ids != [r["item_id"] for r in chunk]:
            raise RuntimeError("prefetched inputs are out of step with the records being encoded")
        return inputs

    def close(self) -> None:
        self._batches = None  # shuts the workers down


class _IdsAnd:
    def __init__(self, preprocess):
        self.preprocess = preprocess

    def __call__(self, records: list[dict]):
        return [r["item_id"] for r in records], self.preprocess(records)
