"""A finished trial's files as one message, so they travel from a Ray worker to the driver.

Workers never write into the run folder: on a cluster without shared storage that folder exists
only on the driver's machine. The worker packs its row, test predictions and learning curve into
the final result it reports to Ray Tune; the driver unpacks them and writes them atomically.
Tables travel as parquet bytes (typed, compact), the row as a plain dict of scalars and strings.
"""
from __future__ import annotations

import io
import json
from typing import Any

import polars as pl

PAYLOAD = "mic_bench_payload"  # the key of the final report that carries the files


def _table_bytes(frame: pl.DataFrame | None) -> bytes | None:
    if frame is None:
        return None
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _table(data: bytes | None) -> pl.DataFrame | None:
    return None if data is None else pl.read_parquet(io.BytesIO(data))


def _plain(value: Any) -> Any:
    """Scalars stay as they are; containers become JSON text, as the row file stores them."""
    return json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else value


def pack(row: dict[str, Any], predictions: pl.DataFrame | None, curve: pl.DataFrame | None) -> dict[str, Any]:
    return {"row": {k: _plain(v) for k, v in row.items()}, "predictions": _table_bytes(predictions),
            "curve": _table_bytes(curve)}


def unpack(payload: dict[str, Any]) -> tuple[dict[str, Any], pl.DataFrame | None, pl.DataFrame | None]:
    return dict(payload["row"]), _table(payload.get("predictions")), _table(payload.get("curve"))
