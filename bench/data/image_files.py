"""What each image file holds: a digest of its bytes and whether it decodes, remembered per file.

Cache keys follow these digests, so a picture replaced on disk (even with the same name and
size) is a new input. Hashing 100k files on every load would be slow, so a manifest in the
cache folder remembers each file's digest with its size, mtime, ctime and inode; a file whose
stat still matches is not read again. Like git's index, an entry written less than
``RACY_NS`` after the file last changed is not trusted (a rewrite inside the same clock tick
would keep the same stat), and ctime, which no tool can set back, catches a rewrite that
restored the old mtime. A decode verdict also depends on the pixel limit
(``MIC_BENCH_MAX_IMAGE_PIXELS``): it is kept with the limit it was made under and made again
when the limit changes.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bench.data.file_reads import NotRegularFile, open_regular
from bench.data.images import ImageDecodeError, decode_image, max_image_pixels, read_image_bytes

log = logging.getLogger(__name__)
READ_CHUNK = 1 << 20
RACY_NS = 2_000_000_000  # coarse file system clocks (and FAT's 2 s) stay inside this margin
CHECK_DRAFT = 64  # decode checks of JPEGs run on a DCT-reduced copy: every byte is still decoded
MANIFEST_NAME = "image_manifest.sqlite3"
LOOKUP_BATCH = 500  # paths per manifest query (SQLite allows 999 parameters on old builds)
SCHEMA = ("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
          "ctime_ns INTEGER, ino INTEGER, hashed_at_ns INTEGER, digest TEXT, checked INTEGER, problem TEXT)")


@dataclass(frozen=True)
class FileFacts:
    """``digest`` of the bytes (None when the file cannot be read); ``problem`` says why the file
    is not a usable picture (None = fine, or not checked when ``checked`` is False)."""

    digest: str | None
    problem: str | None = None
    checked: bool = False


def file_digest(path: str | os.PathLike) -> str:
    """blake2b-128 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open_regular(path) as handle:  # a FIFO would block, a device never end
        while block := handle.read(READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def decode_problem(data: bytes) -> str | None:
    """Why these bytes are not a usable picture, or None (the same decoder the encoders use)."""
    try:
        decode_image(io.BytesIO(data), draft_size=CHECK_DRAFT)
    except ImageDecodeError as exc:
        return "is empty (0 bytes)" if not data else str(exc)
    return None


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _trusted(row: tuple | None, key: tuple, limit: int | None) -> FileFacts | None:
    """The remembered facts when the file's stat still matches and the entry is not racy.

    ``limit``: the pixel limit a decode verdict is needed under (None: no verdict needed). The
    manifest's ``checked`` holds the limit its verdict was made under (0: not checked).
    """
    if row is None or tuple(row[:4]) != key:
        return None
    if max(row[1], row[2]) >= row[4] - RACY_NS:  # changed too close to when it was hashed
        return None
    if limit is not None and row[6] != limit:  # not checked, or checked under another pixel limit
        return None
    if limit is None:
        return FileFacts(row[5])
    return FileFacts(row[5], row[7], True)


class ImageManifest:
    """Digests (and decode verdicts) of image files, kept in ``root``/image_manifest.sqlite3.

    A manifest that cannot be opened or written (read-only cache, a broken file) only costs
    time: every file is then hashed again.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            from bench.storage.paths import cache_dir

            root = cache_dir()
        self.path = Path(root) / MANIFEST_NAME
        self.hashed = 0  # files read in the last scan (the rest came from the manifest)

    def _connect(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60)
            conn.execute("PRAGMA synchronous = OFF")  # a cache: an entry lost in a crash is only hashed again
            conn.execute(SCHEMA)
            return conn
        except (sqlite3.Error, OSError) as exc:
            log.warning("image manifest %s unusable (%s); hashing every image", self.path, exc)
            return None

    def scan(self, paths: Iterable[str], *, check: bool = False) -> dict[str, FileFacts]:
        """Facts for each distinct path; ``check`` also decodes files not yet checked."""
        unique = list(dict.fromkeys(p for p in paths if p))
        self.hashed = 0
        if not unique:
            return {}
        limit = max_image_pixels() if check else None  # a bad $MIC_BENCH_MAX_IMAGE_PIXELS fails here, cached or not
        conn = self._connect()
        out: dict[str, FileFacts] = {}
        fresh: list[tuple] = []
        self.hashed = 0
        try:
            known = self._entries(conn, unique)
            for path in unique:
                try:
                    st = os.stat(path)
                except OSError:
                    out[path] = FileFacts(None, "is missing", True)
                    continue
                key = _stat_key(st)
                facts = _trusted(known.get(path), key, limit)
                if facts is not None:
                    out[path] = facts
                    continue
                facts, hashed_at = self._read(path, check)
                out[path] = facts
                self.hashed += 1
                if facts.digest is not None:
                    fresh.append((path, *key, hashed_at, facts.digest, limit if facts.checked else 0,
                                  facts.problem))
            self._store(conn, fresh)
        finally:
            if conn is not None:
                conn.close()
        return out

    def _entries(self, conn, paths: list[str]) -> dict[str, tuple]:
        """The manifest rows of these paths, read LOOKUP_BATCH paths per query."""
        if conn is None:
            return {}
        rows: dict[str, tuple] = {}
        try:
            for start in range(0, len(paths), LOOKUP_BATCH):
                batch = paths[start:start + LOOKUP_BATCH]
                query = ("SELECT path, size, mtime_ns, ctime_ns, ino, hashed_at_ns, digest, checked, problem "
                         f"FROM files WHERE path IN ({','.join('?' * len(batch))})")
                rows.update((row[0], row[1:]) for row in conn.execute(query, batch))
        except sqlite3.Error as exc:
            log.warning("cannot read the image manifest %s (%s); hashing every image", self.path, exc)
            return {}
        return rows

    @staticmethod
    def _read(path: str, check: bool) -> tuple[FileFacts, int]:
        hashed_at = time.time_ns()  # taken before reading: a write during the read makes the entry racy
        try:
            if not check:
                return FileFacts(file_digest(path)), hashed_at
            data = read_image_bytes(path)  # a regular file of a bounded size, or the reason it is not
        except ImageDecodeError as exc:
            return FileFacts(None, str(exc), True), hashed_at
        except NotRegularFile as exc:
            return FileFacts(None, str(exc), True), hashed_at
        except IsADirectoryError:
            return FileFacts(None, "is a folder, not a file", True), hashed_at
        except OSError as exc:
            return FileFacts(None, f"cannot be read ({exc.strerror or exc})", True), hashed_at
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return FileFacts(digest, decode_problem(data), True), hashed_at

    def _store(self, conn, rows: list[tuple]) -> None:
        if conn is None or not rows:
            return
        try:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            log.warning("cannot update the image manifest %s (%s)", self.path, exc)


def scan_images(paths: Iterable[str], *, check: bool = False, cache_root: str | os.PathLike | None = None
                ) -> dict[str, FileFacts]:
    """FileFacts per distinct path, through the manifest in the cache folder."""
    return ImageManifest(cache_root).scan(paths, check=check)
