"""Read a catalogue table (CSV, TSV, Parquet, JSON lines) with polars, robustly.

Real merchant exports are messy: a BOM, Windows-1252 bytes, rows with a stray separator,
quoted titles spanning lines. Every failure names the file and the line and says what to set.
CSV rows are counted with the csv module (one fast pass) because polars silently fills short
rows with nulls; the frame itself is built by polars.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Literal

import polars as pl

from bench.errors import BenchError
from bench.data.file_reads import NotRegularFile, env_limit, open_regular, read_maybe_gzip

FIELD_LIMIT = 2**31 - 1  # product descriptions can exceed the csv module's 128 KB default

Format = Literal["auto", "csv", "tsv", "parquet", "jsonl"]
BadRows = Literal["error", "skip", "join_last"]
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
              ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def detect_format(path: Path, fmt: Format = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    found = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise BenchError(f"cannot tell the table format from the extension '{''.join(path.suffixes) or '(none)'}'",
                         file=str(path), field="format", fix="set format: csv, tsv, parquet or jsonl")
    return found


def read_table(path: Path, *, fmt: Format = "auto", encoding: str = "utf-8", separator: str | None = None,
               bad_rows: BadRows = "error") -> tuple[pl.DataFrame, dict]:
    """Return (frame, notes). CSV/TSV columns come back as strings; JSON and Parquet keep their types."""
    kind = detect_format(path, fmt)
    if kind == "parquet":
        return _read_parquet(path), {}
    separator = check_separator(separator, path)
    text = decode_text(path, encoding)
    if kind == "jsonl":
        return _read_jsonl(text, path, bad_rows)
    return read_csv_text(text, path, separator or ("\t" if kind == "tsv" else ","), bad_rows)


def check_separator(separator: str | None, path: Path) -> str | None:
    """The csv module splits on one character; a longer separator is a TypeError deep inside it."""
    if separator is not None and len(separator) != 1:
        raise BenchError(f"the separator {separator!r} is {len(separator)} characters; CSV fields are separated by "
                         "one character", file=str(path), field="separator",
                         fix="set separator to one character, e.g. ',', ';', '|' or '\\t' (tab)")
    return separator


MAX_TABLE_ENV = "MIC_BENCH_MAX_TABLE_BYTES"
DEFAULT_MAX_TABLE_BYTES = 16 << 30  # text read into memory at once: far above a catalogue, below a runaway file
GZIP_MAX_RATIO = 100  # text compresses 5-20 times; a file inflating 100 times over is a bomb or the wrong file
GZIP_FLOOR = 64 << 20  # below this, any ratio is fine


def max_table_bytes() -> int:
    """The most bytes of text a table file may hold (inflated): $MIC_BENCH_MAX_TABLE_BYTES or 16 GiB."""
    return env_limit(MAX_TABLE_ENV, DEFAULT_MAX_TABLE_BYTES, "number of bytes", "a number of bytes")


def read_text_bytes(path: Path) -> bytes:
    """A table file's bytes, inflated if it ends in .gz: a regular file only, streamed, and bounded
    by max_table_bytes() and, for .gz, by GZIP_MAX_RATIO times its compressed size."""
    limit = max_table_bytes()
    if path.suffix.lower() == ".gz":
        try:
            limit = min(limit, max(GZIP_FLOOR, GZIP_MAX_RATIO * path.stat().st_size))
        except OSError:
            pass
    return read_maybe_gzip(path, limit, what="table file")


def decode_text(path: Path, encoding: str = "utf-8") -> str:
    """The file as text (gzip allowed, BOM dropped); a bad byte is reported with its line."""
    raw = read_text_bytes(path)
    check_not_utf16(raw, encoding, path)
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise BenchError(f"unknown text encoding '{encoding}'", file=str(path), field="encoding",
                         fix="use a Python codec name such as utf-8, latin-1 or cp1252") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise BenchError(f"line {line} is not valid {encoding} text (byte {raw[exc.start:exc.start + 1]!r} "
                         f"at offset {exc.start})", file=str(path), field="encoding",
                         fix="set encoding: latin-1 (or cp1252) in the dataset options, "
                             "or re-save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


UTF16_CODECS = ("utf-16", "utf_16", "utf16", "utf-16-le", "utf-16-be", "utf_16_le", "utf_16_be", "utf-32", "utf_32",
                 "utf32", "utf-32-le", "utf-32-be", "utf_32_le", "utf_32_be")


def wide_encoding(raw: bytes) -> str | None:
    """utf-16 / utf-32 when the bytes carry their byte-order mark or, without one, the NUL byte of
    every other byte that ASCII text in UTF-16 shows; None otherwise."""
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    head = raw[:4096]
    if len(head) >= 8:
        even, odd = head[0::2], head[1::2]
        if odd.count(0) > 0.4 * len(odd):  # "a\0b\0": the low byte first
            return "utf-16-le"
        if even.count(0) > 0.4 * len(even):
            return "utf-16-be"
    return None


def check_not_utf16(raw: bytes, encoding: str, path: Path) -> None:
    """A UTF-16 file read as utf-8 fails at its first byte, and read as latin-1 it 'works': every
    other character a NUL. Say what the file is instead."""
    if encoding.lower().replace(" ", "") in UTF16_CODECS:
        return
    found = wide_encoding(raw)
    if found:
        raise BenchError(f"the file looks like {found.upper()} text (a byte-order mark or NUL bytes between "
                         f"the characters), not {encoding}", file=str(path), field="encoding",
                         fix=f"set encoding: {found} in the dataset options, or re-save the file as UTF-8")


def read_csv_text(text: str, path: Path, separator: str = ",", bad_rows: BadRows = "error",
                  join_with: str | None = None) -> tuple[pl.DataFrame, dict]:
    """Parse CSV text; rows whose field count differs from the header are reported, skipped,
    or (``join_last``) have their surplus fields joined back into the last column, which is how
    an unquoted separator inside the last field shows up."""
    if not text.strip():
        raise BenchError("the file is empty (no header, no rows)", file=str(path),
                         fix="point the dataset at a file with a header line and at least a few items")
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        return _read_csv_rows(text, path, separator, bad_rows, join_with)
    finally:
        csv.field_size_limit(previous)


def _read_csv_rows(text: str, path: Path, separator: str, bad_rows: BadRows,
                   join_with: str | None) -> tuple[pl.DataFrame, dict]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    bad: list[tuple[int, int]] = []
    try:
        header = next(reader)
        width = len(header)
        _refuse_repeated_columns(header, path)
        for row in reader:
            if row and len(row) != width:
                bad.append((reader.line_num, len(row)))
    except csv.Error as exc:
        raise BenchError(f"line {reader.line_num} cannot be parsed: {exc}", file=str(path),
                         field=f"line {reader.line_num}", fix="check the quoting of that line") from None
    if not bad:
        return _polars_csv(text, path, separator), {}
    short = [b for b in bad if b[1] < width]
    if bad_rows == "error" or (bad_rows == "join_last" and short):
        line, count = short[0] if bad_rows == "join_last" else bad[0]
        raise BenchError(f"line {line} has {count} fields but the header has {width} "
                         f"({len(bad)} such rows in all)", file=str(path), field=f"line {line}",
                         fix="quote fields that contain the separator or a line break; or set bad_rows: skip "
                             "to drop such rows (or bad_rows: join_last when the extra separators are in the last column)")
    note = "skipped_bad_rows" if bad_rows == "skip" else "joined_bad_rows"
    return _rebuild(text, separator, header, bad_rows, join_with or separator), {note: len(bad)}


def _polars_csv(text: str, path: Path, separator: str) -> pl.DataFrame:
    try:
        frame = pl.read_csv(io.BytesIO(text.encode("utf-8")), separator=separator, infer_schema=False,
                            quote_char='"')
        return frame.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines come back as all-null rows
    except pl.exceptions.PolarsError as exc:
        raise BenchError(f"cannot parse the table: {str(exc).splitlines()[0]}", file=str(path),
                         fix="check the separator (option separator) and the quoting") from None


def _rebuild(text: str, separator: str, header: list[str], bad_rows: str, join_with: str) -> pl.DataFrame:
    """Slow path, only for files with bad rows: fix or drop them, then let polars build the frame."""
    width = len(header)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    next(reader)
    rows = []
    for row in reader:
        if not row or all(field == "" for field in row):  # blank lines, as polars drops them
            continue
        if len(row) != width:
            if bad_rows == "skip":
                continue
            row = row[:width - 1] + [join_with.join(row[width - 1:])]
        rows.append(row)
    names = _unique_names(header)
    return pl.DataFrame(rows, schema={n: pl.Utf8 for n in names}, orient="row")


def row_line(path: Path, row: int, *, fmt: Format = "auto", encoding: str = "utf-8", separator: str | None = None,
             bad_rows: BadRows = "error") -> str:
    """Where the ``row``-th data row (0-based, as ``read_table`` returned it) starts in the file:
    "line N" (a quoted cell may span lines, so this is not row + 2), or "row N" for Parquet.
    Only used to point an error at a cell, so it re-reads the file."""
    kind = detect_format(path, fmt)
    if kind == "parquet":
        return f"row {row + 1}"
    text = decode_text(path, encoding)
    if kind == "jsonl":
        return _jsonl_row_line(text, row, bad_rows)
    return csv_row_line(text, separator or ("\t" if kind == "tsv" else ","), row, bad_rows)


def csv_row_line(text: str, separator: str, row: int, bad_rows: BadRows = "error") -> str:
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
        width = len(next(reader))
        count, start = -1, reader.line_num + 1
        for fields in reader:
            begin, start = start, reader.line_num + 1
            if not fields or all(f == "" for f in fields) or (bad_rows == "skip" and len(fields) != width):
                continue
            count += 1
            if count == row:
                return f"line {begin}"
    finally:
        csv.field_size_limit(previous)
    return f"data row {row + 1}"


def _jsonl_row_line(text: str, row: int, bad_rows: BadRows) -> str:
    count = -1
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if bad_rows == "skip":
            try:
                if not isinstance(json_object(line), dict):
                    continue
            except ValueError:
                continue
        count += 1
        if count == row:
            return f"line {number}"
    return f"data row {row + 1}"


def _unique_names(header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in header:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_duplicated_{seen[name] - 1}")
        else:
            seen[name] = 1
            out.append(name)
    return out


def _refuse_repeated_columns(header: list[str], path: Path) -> None:
    """Two columns of one name: a mapping to that name would read one of them silently."""
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        key = name.strip()
        if key in seen:
            raise BenchError(f"the header names the column '{key}' twice (columns {seen[key]} and {position})",
                             file=str(path), field="line 1",
                             fix="rename one of the two columns in the file's header line")
        seen[key] = position


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        with open_regular(path) as handle:
            return pl.read_parquet(handle)
    except NotRegularFile as exc:
        raise BenchError(f"the table file {exc}", file=str(path),
                         fix="point the option at the file itself (FIFOs, devices and sockets are not read)") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BenchError(f"cannot read the Parquet file: {str(exc).splitlines()[0]}", file=str(path),
                         fix="check the file is complete Parquet, or set format: csv / jsonl if it is not Parquet") from None


class RepeatedKey(ValueError):
    """A JSON object names one key twice (JSON readers keep one of the values without a word)."""


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise RepeatedKey(f"the key {key!r} appears twice in one object; JSON readers keep one of the two values "
                              "silently")
        seen.add(key)
    return dict(pairs)


def json_object(line: str):
    """json.loads that refuses an object naming a key twice (RepeatedKey, a ValueError)."""
    return json.loads(line, object_pairs_hook=_unique_pairs)


def _has_repeated_key(text: str) -> bool:
    for line in text.splitlines():
        try:
            json_object(line)
        except RepeatedKey:
            return True
        except ValueError:
            continue
    return False


def _read_jsonl(text: str, path: Path, bad_rows: BadRows) -> tuple[pl.DataFrame, dict]:
    """One JSON object per line; blank lines are fine. Values that are not strings keep their
    JSON form (lists stay lists) so callers can decide how to turn them into text.

    polars reads clean files; a file it rejects (a broken line, a field whose type changes)
    is read line by line so the bad line can be named or skipped.
    """
    try:
        if not _has_repeated_key(text):  # polars would keep one of the two values silently
            frame = pl.read_ndjson(io.BytesIO(text.encode("utf-8")), infer_schema_length=None)
            if frame.height:
                return frame, {}
    except pl.exceptions.PolarsError:
        pass
    records, skipped = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json_object(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if bad_rows == "skip":
                skipped += 1
                continue
            raise BenchError(f"line {number} is not a JSON object ({exc})", file=str(path), field=f"line {number}",
                             fix="one JSON object per line (JSON lines); or set bad_rows: skip to drop such lines") from None
        records.append(record)
    if not records:
        raise BenchError("the file has no JSON records", file=str(path),
                         fix="point the dataset at a JSON-lines file with one object per line")
    columns: dict[str, list] = {}
    for record in records:
        for key in record:
            columns.setdefault(key, [None] * len(records))
    for i, record in enumerate(records):
        for key, value in record.items():
            columns[key][i] = value
    frame = pl.DataFrame({k: pl.Series(k, _uniform(v), strict=False) for k, v in columns.items()})
    return frame, ({"skipped_bad_rows": skipped} if skipped else {})


def _uniform(values: list) -> list:
    """Mixed types in one field (1 and "1", a list and a string) become text so no value is lost."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return values
    return [None if v is None else value_as_text(v) for v in values]


def value_as_text(value) -> str:
    """A JSON value as title text: flat lists joined by spaces, nested ones as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(not isinstance(x, (list, dict)) for x in value):
        return " ".join(str(x) for x in value if x is not None)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
