"""Where mic-bench keeps caches and results, and how files are written safely."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "MIC_BENCH_CACHE"
CACHE_MARKER = ".mic-bench-cache"  # in every cache root: `bench cache clear` empties no folder without it
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """--cache-dir, else $MIC_BENCH_CACHE, else ~/.cache/mic-bench."""
    raw = override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mic-bench"
    path = Path(raw).expanduser()
    fresh = not path.exists() or not any(path.iterdir())
    path.mkdir(parents=True, exist_ok=True)
    if fresh:  # only a folder we created (or found empty) is ours for `bench cache clear` to empty
        mark_cache_root(path)
    return path


def mark_cache_root(root: Path) -> None:
    """Mark a folder as a mic-bench cache root (written when the root is created)."""
    marker = Path(root) / CACHE_MARKER
    if not marker.exists():
        marker.write_text("This folder is a mic-bench cache; `bench cache clear` may empty it.\n", encoding="utf-8")


def is_cache_root(root: Path) -> bool:
    return (Path(root) / CACHE_MARKER).is_file()


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
