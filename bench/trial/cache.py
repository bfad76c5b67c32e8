"""Content-addressed caches of per-item tensors: preprocessed inputs and frozen-encoder features.

An entry is one safetensors file holding a table of tensors (row i = the i-th item of the
records it was built from), keyed by a hash of exactly the inputs that decide it. Entries are
written atomically (temp file + rename) with one checksum per tensor in their metadata and
validated on read: a corrupt or truncated entry is reported, deleted and recomputed. A reader may
ask for some of an entry's tensors only; those are read lazily (the rest never leaves the disk). A file lock per key makes
concurrent trials compute an entry once; the others wait and read it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bench.errors import BenchError
from bench.storage.paths import atomic_path, cache_dir

log = logging.getLogger(__name__)
PAD_VALUES = {"word_ids": -1}  # everything else pads with 0
LENGTH_KEYS = ("attention_mask", "cached_mask")
# Tensors whose dim 1 is a token axis: padded to the longest item when a table is built, and trimmed
# back to each batch's longest item (by attention_mask / cached_mask) when it is served. Any other
# output whose dim 1 varies between batches is padded too (with 0) and served at the table's width.
HALF_DTYPES = (torch.float16, torch.bfloat16)
TOKEN_AXIS_KEYS = ("input_ids", "attention_mask", "token_type_ids", "word_ids", "cached_sequence", "cached_mask")


def cache_key(**parts: Any) -> str:
    """Stable hash of the named inputs (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    """One hash over a whole entry (the layout before per-tensor checksums; still read)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensors[name]))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def _tensor_checksum(tensor: torch.Tensor) -> str:
    return hashlib.sha256(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode()
                          + _tensor_bytes(tensor)).hexdigest()


@dataclass
class TensorTable:
    """Row-aligned tensors for a list of item ids; calling it serves a batch of records by id.

    ``padded`` names the tensors padded along dim 1 (token sequences); a batch is trimmed back
    to its longest item, measured by the table's mask (attention_mask or cached_mask).
    """

    item_ids: list[str]
    tensors: dict[str, torch.Tensor]
    padded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        mask_key = next((k for k in LENGTH_KEYS if k in self.tensors), None)
        self.lengths = self.tensors[mask_key].sum(1) if mask_key and self.padded else None

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        """The batch's rows; tensors stored in half precision come back as float32."""
        return self.take(self.rows_of(records))

    def rows_of(self, records: list[dict]) -> torch.Tensor:
        """The table row of each record (by item id)."""
        return torch.tensor([self.index[r["item_id"]] for r in records], dtype=torch.long)

    def take(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """These rows of every tensor (half precision upcast, token axes trimmed to the longest)."""
        out = {k: _upcast(v.index_select(0, rows)) for k, v in self.tensors.items()}
        if self.lengths is not None and len(rows):
            longest = max(1, int(self.lengths.index_select(0, rows).max()))
            out.update({k: out[k][:, :longest] for k in self.padded})
        return out


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in HALF_DTYPES else tensor


def stack_padded(chunks: list[dict[str, torch.Tensor]], padded: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Concatenate batch outputs; tensors named in ``padded``, and any other whose dim 1 differs
    between batches (a variable-width preprocess output), are padded along dim 1 to the longest
    (``PAD_VALUES``, else 0). Any other difference between batches is an error naming the key."""
    out = {}
    for key in chunks[0]:
        missing = [i for i, c in enumerate(chunks) if key not in c]
        if missing:
            raise BenchError(f"the encoder's preprocess gave '{key}' for some batches and not for others "
                             f"(missing from batch {missing[0]})", field="trial.encoders",
                             fix="make preprocess return the same keys for every batch of records")
        parts = [c[key] for c in chunks]
        if len({p.dim() for p in parts}) > 1 or len({tuple(p.shape[2:]) for p in parts}) > 1:
            shapes = sorted({tuple(p.shape) for p in parts})
            raise BenchError(f"the encoder's preprocess output '{key}' has shapes {shapes} in different batches: "
                             "only dim 1 (a sequence) may vary", field="trial.encoders",
                             fix=f"pad '{key}' to a fixed size in preprocess, or let only its dim 1 vary")
        if key in padded or (parts[0].dim() >= 2 and len({p.shape[1] for p in parts}) > 1):
            longest = max(p.shape[1] for p in parts)
            pad = PAD_VALUES.get(key, 0)
            parts = [torch.nn.functional.pad(p, [0, 0] * (p.dim() - 2) + [0, longest - p.shape[1]], value=pad)
                     for p in parts]
        out[key] = torch.cat(parts).contiguous()
    return out


class CacheStore:
    """A folder of safetensors entries (default $MIC_BENCH_CACHE/tensors)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_dir() / "tensors"
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.bytes_read = 0  # tensor bytes loaded from entries (a lazy partial read counts only its part)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def read(self, key: str, select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor] | None:
        """The entry's tensors (only the names ``select`` accepts, when given), or None when absent.

        Each tensor read is checked against its checksum; a corrupt entry is reported and removed.
        """
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                names = list(f.keys())
                if "checksums" in meta:
                    expected = json.loads(meta["checksums"])
                    if sorted(expected) != sorted(names):
                        raise ValueError("checksums do not name the entry's tensors")
                    wanted = [n for n in names if select is None or select(n)]
                    tensors = {n: f.get_tensor(n) for n in wanted}
                    if any(_tensor_checksum(t) != expected[n] for n, t in tensors.items()):
                        raise ValueError("checksum mismatch")
                else:  # an entry written before per-tensor checksums: verified whole
                    tensors = {n: f.get_tensor(n) for n in names}
                    if meta.get("checksum") is None or _checksum(tensors) != meta["checksum"]:
                        raise ValueError("checksum mismatch")
                    tensors = {n: t for n, t in tensors.items() if select is None or select(n)}
            self.bytes_read += sum(t.numel() * t.element_size() for t in tensors.values())
            return tensors
        except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
            log.warning("cache entry %s is corrupt (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None

    def write(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        checksums = json.dumps({k: _tensor_checksum(v) for k, v in tensors.items()}, sort_keys=True)
        with atomic_path(self.path(key)) as tmp:
            save_file(tensors, str(tmp), metadata={**(meta or {}), "checksums": checksums})

    def get_or_compute(self, key: str, compute: Callable[[], dict[str, torch.Tensor]],
                       meta: dict[str, str] | None = None,
                       select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
        """Read the entry, or compute and write it under a lock (concurrent callers compute once).

        ``select`` picks the tensors returned; the entry always holds everything ``compute`` made.
        """
        found = self.read(key, select)
        if found is not None:
            self.hits += 1
            return found
        lock_path = self.path(key).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            found = self.read(key, select)  # another trial may have written it while we waited
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
            tensors = compute()
            self.write(key, tensors, meta)
            return {k: v for k, v in tensors.items() if select is None or select(k)}

    def info(self) -> dict[str, Any]:
        files = list(self.root.rglob("*.safetensors"))
        return {"path": str(self.root), "entries": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def clear(self) -> int:
        n = len(list(self.root.rglob("*.safetensors")))
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        return n


def batched(records: list[dict], size: int) -> Iterable[list[dict]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]
