"""Reading user files without hanging or running out of memory.

A path can name a FIFO (reading blocks until a writer comes, maybe never), a device (/dev/zero
never ends) or a socket; a file can be far larger than what it claims to be, and a gzip archive
can inflate a thousandfold. Every reader of user input opens through here: only regular files,
opened without blocking and checked again on the open descriptor (the path may be swapped in
between), and read or inflated up to a stated number of bytes.
"""
from __future__ import annotations

import io
import os
import stat
import zlib
from pathlib import Path
from typing import IO

from bench.errors import BenchError

READ_CHUNK = 1 << 20
GZIP_RATIO_HINT = "a .gz file inflating far beyond its size is refused (a decompression bomb, or the wrong file)"


def env_limit(name: str, default: int, unit: str, example: str) -> int:
    """A size limit from the environment variable ``name`` (``default`` when unset), refused with the
    variable named unless it is a positive number (``unit``: "pixel count", "number of bytes" ...)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise BenchError(f"{raw!r} is not a positive {unit}", file="environment", field=name,
                         fix=f"set it to {example}, or unset it for the default {default}")
    return value


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a socket or a folder; the message says which ("is a FIFO ...")."""


def file_kind(mode: int) -> str:
    """What a stat mode names, as a user would say it."""
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return words
    return "not a regular file"


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file one may read (None when it is one, or does not exist)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _reason(mode)


def _reason(mode: int) -> str:
    return "is a folder, not a file" if stat.S_ISDIR(mode) else f"is {file_kind(mode)}, not a regular file"


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """Open a regular file for reading in binary; anything else raises NotRegularFile before a read.

    O_NONBLOCK keeps the open itself from waiting on a FIFO without a writer; the descriptor is
    checked with fstat, so a path swapped for a FIFO after a stat is still caught.
    """
    reason = not_regular_reason(path)
    if reason:
        raise NotRegularFile(reason)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(_reason(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_at_most(handle: IO[bytes], limit: int) -> bytes | None:
    """Up to ``limit`` bytes of ``handle``; None when it holds more.

    A regular file whose size fits is read in one piece (one allocation, as read() would); a
    larger one is not read at all; anything else (a size of 0 that lies, a file still growing)
    in blocks, so a small file never allocates the whole bound."""
    try:
        size = os.fstat(handle.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        size = 0
    if size > limit:
        return None
    first = handle.read(size + 1) if size else b""
    if len(first) <= size and size:
        return first
    parts, total = [first] if first else [], len(first)
    while total <= limit:
        block = handle.read(min(READ_CHUNK, limit + 1 - total))
        if not block:
            break
        parts.append(block)
        total += len(block)
    return None if total > limit else b"".join(parts)


def read_regular(path: str | os.PathLike, limit: int, *, option: str | None = None, what: str = "file",
                 fix: str | None = None) -> bytes:
    """A regular file's bytes, refused (a BenchError naming the file) when not regular or over ``limit``."""
    try:
        with open_regular(path) as handle:
            data = read_at_most(handle, limit)
    except NotRegularFile as exc:
        raise BenchError(f"the {what} {exc}", file=str(path), field=option,
                         fix="point the option at the file itself (FIFOs, devices and sockets are not read)") from None
    except OSError as exc:
        raise BenchError(f"cannot read the {what}: {exc.strerror or exc}", file=str(path), field=option,
                         fix="check the path and its permissions") from None
    if data is None:
        raise BenchError(f"the {what} is larger than {limit} bytes", file=str(path), field=option,
                         fix=fix or "check it is the right file")
    return data


def gunzip_at_most(compressed: IO[bytes] | bytes, limit: int) -> bytes | None:
    """Inflate a gzip stream (several members allowed) to at most ``limit`` bytes; None beyond.

    Memory stays near ``limit``: the stream is inflated block by block and stopped as soon as the
    output passes the bound, unlike gzip.decompress, which inflates the whole archive first.
    Raises zlib.error / EOFError for a corrupt or cut archive; an empty file inflates to nothing.
    """
    parts: list[bytes] = []  # a growing bytearray would copy itself on each reallocation: twice the memory
    total = 0
    inflater = zlib.decompressobj(wbits=31)
    fed = False
    for block in _blocks(compressed):
        data = block
        while data:
            if inflater.eof:  # one member ended; what follows starts another (concatenated .gz files)
                if not data.strip(b"\x00"):  # zero padding after the last member, as some tools write
                    break
                inflater = zlib.decompressobj(wbits=31)
            fed = True
            chunk = inflater.decompress(data, min(READ_CHUNK, limit + 1 - total))
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                return None
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if fed and not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")
    return b"".join(parts)


def _blocks(source: IO[bytes] | bytes):
    if isinstance(source, (bytes, bytearray)):
        for start in range(0, len(source), READ_CHUNK):
            yield bytes(source[start:start + READ_CHUNK])
        return
    while block := source.read(READ_CHUNK):
        yield block


def read_maybe_gzip(path: Path, limit: int, *, option: str | None = None, what: str = "file") -> bytes:
    """A regular file's bytes, inflated when it ends in .gz; at most ``limit`` bytes either way.

    Raises a BenchError naming the file for a non-regular path, a file or an inflated stream
    over ``limit``, and a corrupt or cut archive.
    """
    if path.suffix.lower() != ".gz":
        return read_regular(path, limit, option=option, what=what,
                            fix=f"a {what} over {limit} bytes is refused; check it is the right file")
    try:
        with open_regular(path) as handle:
            data = gunzip_at_most(handle, limit)
    except NotRegularFile as exc:
        raise BenchError(f"the {what} {exc}", file=str(path), field=option,
                         fix="point the option at the file itself (FIFOs, devices and sockets are not read)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise BenchError(f"cannot read the file: {exc}", file=str(path), field=option,
                         fix="check the file is complete (a .gz file must be a whole gzip archive)") from None
    if data is None:
        raise BenchError(f"the {what} inflates to more than {limit} bytes", file=str(path), field=option,
                         fix=f"{GZIP_RATIO_HINT}; check it is the right file") from None
    return data
