"""Encoders fitted on the training split (TF-IDF, ...): fit once per train content and options.

The fitted state is a dict of tensors (strings travel as UTF-8 JSON in a uint8 tensor), cached
as one safetensors entry, never a pickle, under a key made of the encoder class, its
``fit_fingerprint()`` and a digest of the train records' content. The state is always applied
through ``load_fitted``, whether just computed or read back, so both paths are the same.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from bench.trial.cache import CacheStore, cache_key
from bench.api.interfaces import Encoder


def json_tensor(value: Any) -> torch.Tensor:
    """JSON-serialisable value -> uint8 tensor of its UTF-8 JSON text (a safetensors-safe string)."""
    return torch.frombuffer(bytearray(json.dumps(value, ensure_ascii=False).encode("utf-8")), dtype=torch.uint8)


def tensor_json(tensor: torch.Tensor) -> Any:
    return json.loads(bytes(tensor.cpu().numpy().tobytes()).decode("utf-8"))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Hash of a fitted state: what a fitted encoder puts in its preprocess_fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(str(state[name].dtype).encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def records_digest(records: list[dict[str, Any]]) -> str:
    """Hash of what a fit may read from each train record: id, title, image path, label, group."""
    digest = hashlib.sha256()
    for r in records:
        image = r.get("image")
        digest.update(json.dumps([r.get("item_id"), r.get("title"), image if image is None or isinstance(image, str)
                                  else hashlib.sha256(bytes(image)).hexdigest(), r.get("label"), r.get("group")],
                                 ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:24]


def fit_key(encoder: Encoder, train_records: list[dict[str, Any]]) -> str:
    return cache_key(kind="fitted", encoder=f"{type(encoder).__module__}.{type(encoder).__qualname__}",
                     options=encoder.fit_fingerprint(), train=records_digest(train_records))


def is_fitted_encoder(encoder: Encoder) -> bool:
    return type(encoder).fit is not Encoder.fit


def fit_encoder(encoder: Encoder, train_records: list[dict[str, Any]], store: CacheStore | None) -> dict[str, Any]:
    """Fit (or read the cached fit of) one encoder on the train records; apply it; return its row values."""
    if store is None:
        state = encoder.fit(train_records)
    else:
        state = store.get_or_compute(fit_key(encoder, train_records), lambda: encoder.fit(train_records))
    encoder.load_fitted(state)
    return encoder.report()
