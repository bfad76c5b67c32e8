"""Dataset example: a JSON-lines file, one product per line."""
import json
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from bench import hookimpl
from bench.data.catalog import Catalog
from bench.errors import BenchError
from bench.api.registry import PluginSpec


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="the .jsonl file (relative paths: to the working directory)")
    id_key: str = "id"
    title_key: str = "title"
    image_key: str | None = Field("image", description="image path, relative to the file's folder; null = none")
    label_key: str | None = "label"
    group_key: str | None = None


def load(opts: JsonlOptions, ctx) -> Catalog:
    path = Path(opts.path)
    if not path.is_file():
        raise BenchError("file not found", file=path, field="path", fix="give the path of a .jsonl file")
    keys = {"item_id": opts.id_key, "title": opts.title_key, "image": opts.image_key,
            "label": opts.label_key, "group": opts.group_key}
    rows, untitled = [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchError(f"not JSON: {exc.msg}", file=path, field=f"line {number}",
                             fix="write one JSON object per line") from None
        if not record.get(opts.title_key):
            untitled += 1
            continue
        rows.append({column: None if key is None or record.get(key) is None else str(record[key])
                     for column, key in keys.items()})
    items = pl.DataFrame(rows, schema={column: pl.Utf8 for column in keys})
    if opts.image_key is not None:
        items = items.with_columns(pl.col("image").map_elements(lambda p: str(path.parent / p), return_dtype=pl.Utf8))
    return Catalog(name=path.stem, items=items, source=str(path), notes={"skipped_untitled": untitled})


@hookimpl
def bench_datasets():
    return [PluginSpec("dataset", "jsonl", "a JSON-lines file, one product per line", load, JsonlOptions)]
