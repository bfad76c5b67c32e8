"""`bench validate` checks that the data a dataset names is there, without loading it.

A dataset option is a data path when it is called ``path`` (every reader's file or folder) or its
field declares ``json_schema_extra={"data_path": True}`` (e.g. the pair files of wdc_products).
Relative values are taken from the working folder, as the readers and the preflight take them.
Paths inside a dataset folder (a reader's own file names) are left to the preflight's load.
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from bench.errors import BenchError
from bench.data.file_reads import not_regular_reason

DATA_PATH = {"data_path": True}  # json_schema_extra of a dataset option naming a file or folder to read


def data_path_options(options: BaseModel) -> dict[str, str]:
    """Option name -> value of every data path option that is set (URIs left out)."""
    out = {}
    for name, info in type(options).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if name != "path" and not extra.get("data_path"):
            continue
        value = getattr(options, name, None)
        if isinstance(value, str) and value and "://" not in value:
            out[name] = value
    return out


def check_data_paths(options: BaseModel, *, file: str, field: str) -> None:
    """Each data path exists and can be read: a regular file, or a folder that can be listed."""
    for name, raw in data_path_options(options).items():
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        where = f"{field}.{name}"
        if not path.exists():
            looked = "" if Path(raw).expanduser().is_absolute() else f" (looked in {path})"
            raise BenchError(f"file not found: {raw}{looked}", file=file, field=where,
                             fix=f"check the spelling, or give an absolute path in the dataset option {name}")
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                raise BenchError(f"the folder {path} cannot be read", file=file, field=where,
                                 fix="check the folder's permissions")
            continue
        odd = not_regular_reason(path)
        if odd:
            raise BenchError(f"{path} {odd}", file=file, field=where,
                             fix=f"set {name} to a regular file (FIFOs, devices and sockets are not read)")
        if not os.access(path, os.R_OK):
            raise BenchError(f"the file {path} cannot be read", file=file, field=where,
                             fix="check the file's permissions")
