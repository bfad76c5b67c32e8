"""What `bench cache info` and `bench cache clear` do to a cache folder, and nothing more.

info only reads: it creates no folder and no marker wherever it is pointed. clear never follows
a symlink (a link inside the cache is removed as a link, whatever it points at) and checks that
every entry can be removed before it removes any, so it never stops half way.
"""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.storage.paths import CACHE_MARKER, is_cache_root


@dataclass
class CacheSummary:
    exists: bool
    tensor_entries: int = 0
    tensor_bytes: int = 0
    total_bytes: int = 0
    unreadable: int = 0  # sub-folders that could not be listed (their contents are not counted)


def _check_folder(root: Path) -> None:
    if not root.is_dir():
        raise BenchError("this is a file, not a cache folder", file=root, field="--cache-dir",
                         fix="pass the cache folder (default $MIC_BENCH_CACHE or ~/.cache/mic-bench)")
    try:
        os.listdir(root)
    except OSError as exc:
        raise BenchError(f"cannot read the cache folder ({exc.strerror or exc})", file=root, field="--cache-dir",
                         fix="check the folder's permissions, or pass another --cache-dir") from None


def summarize(root: Path) -> CacheSummary:
    """Sizes under ``root``, read without following links and without writing anything."""
    if not os.path.lexists(root):
        return CacheSummary(exists=False)
    _check_folder(root)
    summary = CacheSummary(exists=True)

    def unreadable(_: OSError) -> None:
        summary.unreadable += 1

    for folder, _, files in os.walk(root, onerror=unreadable):  # followlinks=False: a link is not entered
        in_tensors = Path(folder).is_relative_to(root / "tensors")
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            summary.total_bytes += info.st_size
            if in_tensors and name.endswith(".safetensors"):
                summary.tensor_entries += 1
                summary.tensor_bytes += info.st_size
    return summary


def _removal_problem(root: Path) -> str | None:
    """Why some entry under ``root`` could not be removed (None: all can). A file or link goes when
    its folder is writable; a folder's contents are checked the same way, links never entered."""
    for folder, subfolders, _ in os.walk(root, onerror=_raise):
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
        for name in subfolders:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and not os.access(path, os.R_OK | os.X_OK):
                return f"{path} cannot be read"
    return None


def _raise(exc: OSError) -> None:
    raise exc


def clear(root: Path) -> int:
    """Remove every entry of the cache root but its marker; returns how many top-level entries went."""
    _check_folder(root)
    if not is_cache_root(root):
        raise BenchError(f"not a mic-bench cache folder (it has no {CACHE_MARKER} marker); nothing was deleted",
                         file=root, field="--cache-dir",
                         fix=f"pass the cache folder itself; if it is one made before the marker existed, "
                             f"create the marker: touch {root / CACHE_MARKER}")
    try:
        problem = _removal_problem(root)
    except OSError as exc:
        problem = f"{exc.filename or root} cannot be read ({exc.strerror or exc})"
    if problem:
        raise BenchError(f"{problem}; nothing was deleted", file=root, field="--cache-dir",
                         fix="fix the permissions of that entry (or remove it yourself), then clear again")
    removed = 0
    for child in root.iterdir():
        if child.name == CACHE_MARKER:
            continue
        if child.is_symlink() or not child.is_dir():  # a link is removed itself, never what it points at
            child.unlink()
        else:
            shutil.rmtree(child)
        removed += 1
    return removed
