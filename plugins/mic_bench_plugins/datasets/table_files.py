"""Read a catalogue table (CSV, TSV, Parquet, JSON lines) with polars, robustly.

Real merchant exports are messy: a BOM, Windows-1252 bytes, rows with a stray separator,
quoted titles spanning lines. Every failure names the file and the line and says what to set.
CSV rows are counted with the csv module (one fast pass) because polars silently fills short
rows with nulls; the frame itself is built by polars.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Literal

import polars as pl

from bench.errors import BenchError

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
    text = decode_text(path, encoding)
    if kind == "jsonl":
        return _read_jsonl(text, path, bad_rows)
    return read_csv_text(text, path, separator or ("\t" if kind == "tsv" else ","), bad_rows)


def decode_text(path: Path, encoding: str = "utf-8") -> str:
    """The file as text (gzip allowed, BOM dropped); a bad byte is reported with its line."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise BenchError(f"cannot read the file: {exc}", file=str(path),
                         fix="check the file is complete (a .gz file must be a whole gzip archive)") from None
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
                if not isinstance(json.loads(line), dict):
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


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BenchError(f"cannot read the Parquet file: {str(exc).splitlines()[0]}", file=str(path),
                         fix="check the file is complete Parquet, or set format: csv / jsonl if it is not Parquet") from None


def _read_jsonl(text: str, path: Path, bad_rows: BadRows) -> tuple[pl.DataFrame, dict]:
    """One JSON object per line; blank lines are fine. Values that are not strings keep their
    JSON form (lists stay lists) so callers can decide how to turn them into text.

    polars reads clean files; a file it rejects (a broken line, a field whose type changes)
    is read line by line so the bad line can be named or skipped.
    """
    try:
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
            record = json.loads(line)
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
