"""One data file's layout, known before any row is converted: its kind, header, columns and their kinds
(from a sample), a row count and, for a big plain CSV file, the byte ranges its rows are parsed in.

Compressed or binary bytes under a text name, and text that is not UTF-8, fail here with a sentence.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sagemaker_contract.cells import (
    BOOL,
    CATEGORICAL,
    NUMERIC,
    column_kind,
    detect_header,
    is_numeric_arrow_type,
    is_text_arrow_type,
)
from sagemaker_contract.errors import UserError

PARQUET_TYPES = ("application/x-parquet", "application/parquet", "parquet")
SKIP_NAMES = ("_SUCCESS", "_committed", "_started")
PARQUET_INDEX = re.compile(r"^__index_level_\d+__$")
SAMPLE_BYTES = 1 << 20
SAMPLE_ROWS = 2000
# pyarrow's streaming CSV reader parses on one core whatever `use_threads` says: a big plain file is split
# at line ends into one byte range per core (at most 8), each parsed by its own reader into its own rows.
PARALLEL_MIN_BYTES = 32 << 20
PARALLEL_MAX_RANGES = 8
COMPRESSED = {b"BZh": "bzip2", b"PK\x03\x04": "zip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def channel_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not p.name.startswith((".", "_"))
        and p.name not in SKIP_NAMES
        and not p.name.endswith(".manifest")
    )


def file_kind(path: Path, content_type: str | None) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    if content_type and content_type.lower().split(";")[0].strip() in PARQUET_TYPES:
        return "parquet"
    with path.open("rb") as handle:
        if handle.read(4) == b"PAR1":
            return "parquet"
    return "csv"


@dataclass
class Source:
    """One data file: its layout, known before any row is converted."""

    path: Path
    label: str
    kind: str  # csv | parquet
    names: list[str]
    has_header: bool
    rows_estimate: int  # exact for Parquet; for CSV the line count (an upper bound: blank lines)
    kinds: dict[str, str] = field(default_factory=dict)  # column -> numeric | bool | categorical
    ranges: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, lines): parallel parsing
    # A host's part of the file in a multi-host job (cluster.py): data rows [start, stop); None: every row.
    window: tuple[int, int] | None = None


def _ranges(path: Path, skip: int, parts: int) -> list[tuple[int, int, int]]:
    """`parts` byte ranges of a plain file from byte `skip`, each ending at a line end, with their line counts
    (one read of the file, as the plain line count takes)."""
    size = path.stat().st_size
    bounds = [skip]
    with path.open("rb") as handle:
        for k in range(1, parts):
            handle.seek(max(skip + (size - skip) * k // parts, bounds[-1]))
            handle.readline()  # to the next line end
            bounds.append(min(handle.tell(), size))
        bounds.append(size)
        ranges = []
        for start, end in itertools.pairwise(bounds):
            if end <= start:
                continue
            handle.seek(start)
            lines, left, last = 0, end - start, b"\n"
            while left > 0:
                chunk = handle.read(min(8 << 20, left))
                lines += chunk.count(b"\n")
                left -= len(chunk)
                last = chunk[-1:]
            ranges.append((start, end, lines + (last != b"\n")))
    return ranges


def _count_lines(path: Path) -> int:
    """Lines in the file (a last line without a newline counts): the row bound that sizes the matrix and
    the memory estimate. A .gz file is decompressed once more to count them (zlib: fast, and exact)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    count, last = 0, b"\n"
    with opener(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _head(path: Path) -> bytes:
    """The first ~1 MB of a CSV file, decompressed, cut at a line end (whole first lines, however long)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        while head.count(b"\n") < 3:
            more = handle.read(SAMPLE_BYTES)
            if not more:
                break
            head += more
    cut = head.rfind(b"\n")
    return head if cut < 0 else head[: cut + 1]


def _sample_rows(text: str) -> list[list[str]]:
    import io

    return [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)][
        : SAMPLE_ROWS + 1
    ]


def _check_bytes(path: Path, label: str) -> None:
    """Compressed or binary bytes under a text name get a sentence, not a parse error full of garbage."""
    with path.open("rb") as handle:
        magic = handle.read(8)
    gzipped = magic.startswith(b"\x1f\x8b")
    if gzipped and not path.name.endswith(".gz"):
        raise UserError(
            f"{label} is gzip-compressed but its name does not end in .gz. Name it .csv.gz (it is then "
            "decompressed while reading), or upload it uncompressed."
        )
    if path.name.endswith(".gz") and not gzipped:
        raise UserError(
            f"{label} is named .gz but is not gzip-compressed. Name it .csv, or compress it with gzip."
        )
    for prefix, name in COMPRESSED.items():
        if magic.startswith(prefix):
            raise UserError(
                f"{label} is compressed ({name}). Only gzip is read (name the file .csv.gz); decompress it, or "
                "compress it with gzip."
            )
    if magic.startswith(b"PAR1"):
        raise UserError(f"{label} is a Parquet file under a CSV name. Name it .parquet.")


def csv_source(path: Path, label: str) -> Source | None:
    if path.stat().st_size == 0:
        return None
    _check_bytes(path, label)
    try:
        head = _head(path)
    except (OSError, EOFError) as error:
        raise UserError(f"{label} is not a readable gzip file ({str(error)[:100]}).") from None
    if b"\x00" in head:
        raise UserError(
            f"{label} is not a text CSV file (it has binary content). Upload CSV text, or Parquet named .parquet."
        )
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{label} is not UTF-8 text (byte 0x{head[error.start]:02x} at position {error.start}). "
            "Save it as UTF-8 CSV."
        ) from None
    rows = _sample_rows(text)
    if not rows:
        return None
    tokens = rows[0]
    has_header = detect_header(tokens, rows[1:])
    names = [t.strip() for t in tokens] if has_header else [f"c{i}" for i in range(len(tokens))]
    if has_header and len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"The header row of {label} repeats the column name(s) {', '.join(dupes)}.")
    data = rows[1:] if has_header else rows
    kinds = {name: column_kind([row[j] for row in data if j < len(row)]) for j, name in enumerate(names)}
    parts = min(os.cpu_count() or 1, PARALLEL_MAX_RANGES)
    if path.stat().st_size >= PARALLEL_MIN_BYTES and parts > 1 and not path.name.endswith(".gz"):
        skip = len(head.split(b"\n", 1)[0]) + 1 if has_header else 0
        ranges = _ranges(path, skip, parts)
        return Source(path, label, "csv", names, has_header, sum(r[2] for r in ranges), kinds, ranges)
    rows = _count_lines(path) - has_header
    return Source(path, label, "csv", names, has_header, rows, kinds)


def parquet_source(path: Path, label: str) -> Source | None:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(f"{label} is not a readable Parquet file ({str(error)[:200]}).") from None
    if parquet.metadata.num_rows == 0:
        return None
    schema = parquet.schema_arrow
    kinds: dict[str, str] = {}
    names = [name for name in schema.names if not PARQUET_INDEX.match(name)]  # pandas' stored index
    for column in schema:
        if PARQUET_INDEX.match(column.name):
            continue
        if pa.types.is_boolean(column.type):
            kinds[column.name] = BOOL
        elif is_numeric_arrow_type(column.type):
            kinds[column.name] = NUMERIC
        elif is_text_arrow_type(column.type):
            kinds[column.name] = CATEGORICAL
        else:
            raise UserError(
                f"Column '{column.name}' of {label} has type {column.type}, which is neither a number, true/false "
                "nor text. Convert it (dates, for example, to a number of days) before training."
            )
    return Source(path, label, "parquet", names, True, parquet.metadata.num_rows, kinds)
