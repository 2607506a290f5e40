"""Reading a channel (/opt/ml/input/data/<channel>/): CSV and Parquet tables as data scientists have them.

- Files: CSV (`.csv`, `.csv.gz`, `.txt`) or Parquet, one file or many (recursively; hidden files, `_SUCCESS`
  and empty part files are skipped).
- CSV: a header row is detected (see `detect_header`: also a header of numbers as pandas writes it, and
  after a UTF-8 byte order mark); without one, columns are named c0, c1, ... (SageMaker built-in style:
  headerless, target first).
- Column kinds, decided from the train channel (a sample of each CSV file, the schema of each Parquet file):
  numbers; booleans (`True`/`False` text in CSV, bool columns in Parquet) as 1/0; anything else with text is
  categorical: its values become category codes 0..k-1 (sorted), and a value the train channel does not
  have is a missing value in the other channels. A column of numbers with a few stray words (under 5%) is a
  numeric column with bad cells, reported with the row, not a category.
- The target is the column named by the `target` hyperparameter, else the first column. A text target is a
  set of class labels (see tasks.py).
- Files are streamed by pyarrow block by block, straight to float32 (no pandas, no float64 copy), into one
  preallocated C-order float32 matrix: peak memory is about the matrix plus a few blocks.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset
from sagemaker_contract.tasks import UNSEEN, Target

csv.field_size_limit(sys.maxsize)  # a cell may be as long as a row: its limit is memory, not 128 KB

CSV_TYPES = ("text/csv", "csv", "text/csv;label_size=1")
PARQUET_TYPES = ("application/x-parquet", "application/parquet", "parquet")
SKIP_NAMES = ("_SUCCESS", "_committed", "_started")
CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): .*invalid value '(.*)'")
# The row index pandas writes: an unnamed first CSV column (`to_csv` without index=False; "Unnamed: 0" once
# read back and written again), and the index columns it stores in Parquet.
UNNAMED_INDEX = re.compile(r"^(|Unnamed: 0)$")
PARQUET_INDEX = re.compile(r"^__index_level_\d+__$")

NUMERIC, BOOL, CATEGORICAL = "numeric", "bool", "categorical"
# What pyarrow reads as a missing value in a CSV cell (its defaults: "", NA, N/A, NaN, nan, null, NULL, ...).
NULL_TOKENS = frozenset(pcsv.ConvertOptions().null_values)
TRUE_TOKENS = frozenset(pcsv.ConvertOptions().true_values)  # 1, True, TRUE, true
FALSE_TOKENS = frozenset(pcsv.ConvertOptions().false_values)  # 0, False, FALSE, false
BOOL_WORDS = frozenset({"true", "false"})
NUMERIC_SHARE = 0.95  # a column whose sampled values are at least this share numbers is numeric
SAMPLE_BYTES = 1 << 20
SAMPLE_ROWS = 2000
BLOCK_BYTES = 1 << 20
# Wider than this, pyarrow's CSV reader (per-column builders) is the slow, memory-hungry part: measured here,
# 2 rows x 500k columns took 44 s and 4.3 GB. Such files are parsed line by line with numpy instead (0.7 s).
WIDE_COLUMNS = 2000
WIDE_BLOCK_BYTES = 8 << 20  # float32 rows converted per step on the wide path
# pyarrow's streaming CSV reader parses on one core whatever `use_threads` says: a big plain file is split
# at line ends into one byte range per core (at most 8), each parsed by its own reader into its own rows.
PARALLEL_MIN_BYTES = 32 << 20
PARALLEL_MAX_RANGES = 8

MISSING_TOKENS = ("", "nan", "na", "null")


def cell_value(token: str) -> float:
    """One CSV cell as a number; empty and NaN/NA/null cells are missing values, true/false are 1/0.
    ValueError otherwise."""
    token = token.strip()
    lowered = token.lower()
    if lowered in MISSING_TOKENS or token in NULL_TOKENS:
        return float("nan")
    if lowered in BOOL_WORDS:
        return 1.0 if lowered == "true" else 0.0
    return float(token)


def is_number(token: str) -> bool:
    try:
        cell_value(token)
    except ValueError:
        return False
    return True


def is_numeric_arrow_type(arrow_type: pa.DataType) -> bool:
    """Columns read as numbers: integers, floats, decimals and booleans (training and serving alike)."""
    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_decimal(arrow_type)
    )


def is_text_arrow_type(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        return is_text_arrow_type(arrow_type.value_type)
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def looks_like_header(tokens: list[str]) -> bool:
    cells = [t.strip().strip('"') for t in tokens if t.strip().strip('"')]
    return bool(cells) and not any(is_number(t) for t in cells)


def detect_header(first: list[str], rows: list[list[str]]) -> bool:
    """Is the first line a header? Yes when:
    - it counts 0, 1, 2, ... (pandas' names for `pd.DataFrame(X)`, maybe after an empty index name);
    - it has a word where the rows below have numbers or true/false, and its numbers, if any, count up by
      one like column numbers (`label,0,1,...,63` above numbers);
    - it has no number at all (a table of text columns, or a single line).
    A data row with a typo is not a header: its numbers are values, not a count (the reader then reports the
    typo with its row).
    """
    cells = [cell.strip() for cell in first]
    named = cells[1:] if cells and cells[0] == "" else cells
    if len(named) > 1 and named == [str(i) for i in range(len(named))]:
        return True
    numbers = [cell for cell in cells if cell not in NULL_TOKENS and is_number(cell)]
    if numbers and not _counts_up(numbers):
        return looks_like_header(first)
    for j, cell in enumerate(cells):
        if cell in NULL_TOKENS or is_number(cell):
            continue
        below = [row[j] for row in rows if j < len(row)]
        if below and column_kind(below) in (NUMERIC, BOOL) and any(v not in NULL_TOKENS for v in below):
            return True
    return looks_like_header(first)


def _counts_up(cells: list[str]) -> bool:
    """Whole numbers each one more than the last: column numbers, not data."""
    if not all(cell.isdigit() for cell in cells):
        return False
    values = [int(cell) for cell in cells]
    return all(b == a + 1 for a, b in itertools.pairwise(values))


def column_kind(values: list[str]) -> str:
    """numeric, bool or categorical, from a column's sampled CSV cells."""
    present = [v for v in values if v not in NULL_TOKENS]
    if not present:
        return NUMERIC
    try:
        np.array(present, dtype=np.float64)  # numpy parses in C: the common case costs microseconds
        return NUMERIC
    except ValueError:
        pass
    words = {v.strip().lower() for v in present}
    if words <= BOOL_WORDS | {"1", "0", "1.0", "0.0"} and words & BOOL_WORDS:
        return BOOL
    numbers = sum(is_number(v) for v in present)
    return NUMERIC if numbers >= NUMERIC_SHARE * len(present) else CATEGORICAL


def channel_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not p.name.startswith((".", "_"))
        and p.name not in SKIP_NAMES
        and not p.name.endswith(".manifest")
    )


def _kind(path: Path, content_type: str | None) -> str:
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
class _Source:
    """One data file: its layout, known before any row is converted."""

    path: Path
    label: str
    kind: str  # csv | parquet
    names: list[str]
    has_header: bool
    rows_estimate: int  # exact for Parquet; for CSV the line count (an upper bound: blank lines)
    kinds: dict[str, str] = field(default_factory=dict)  # column -> numeric | bool | categorical
    ranges: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, lines): parallel parsing


@dataclass
class Layout:
    """A channel's files and columns, before any row is read."""

    channel: str
    directory: Path
    sources: list[_Source]
    names: list[str]

    @property
    def rows(self) -> int:
        return sum(s.rows_estimate for s in self.sources)

    @property
    def headerless(self) -> bool:
        return not any(s.has_header for s in self.sources)

    @property
    def wide(self) -> bool:
        return len(self.names) > WIDE_COLUMNS

    def kinds(self) -> dict[str, str]:
        """Per column, the most general kind any file shows (numeric < bool < categorical)."""
        order = {NUMERIC: 0, BOOL: 1, CATEGORICAL: 2}
        merged = dict.fromkeys(self.names, NUMERIC)
        for source in self.sources:
            for name, kind in source.kinds.items():
                if order[kind] > order[merged[name]]:
                    merged[name] = kind
        return merged


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


COMPRESSED = {b"BZh": "bzip2", b"PK\x03\x04": "zip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


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


def _csv_source(path: Path, label: str) -> _Source | None:
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
        return _Source(path, label, "csv", names, has_header, sum(r[2] for r in ranges), kinds, ranges)
    rows = _count_lines(path) - has_header
    return _Source(path, label, "csv", names, has_header, rows, kinds)


class _BlockTooSmall(Exception):
    """A row longer than pyarrow's block: read the file again with bigger blocks."""


def _csv_batches(
    source: _Source, kinds: list[str], block_bytes: int = BLOCK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Streams the file block by block, parsed straight to float32, bool or dictionary-encoded text: memory
    stays at a few 1 MB blocks (measured on 1M x 20: 1 MB blocks peak ~100 MB lower than 4 MB blocks)."""
    read = pcsv.ReadOptions(
        column_names=source.names,
        skip_rows=1 if source.has_header else 0,
        block_size=block_bytes,
        use_threads=True,
    )
    types = {NUMERIC: pa.float32(), BOOL: pa.bool_(), CATEGORICAL: pa.dictionary(pa.int32(), pa.string())}
    convert = pcsv.ConvertOptions(
        column_types={name: types[kind] for name, kind in zip(source.names, kinds, strict=True)},
        strings_can_be_null=True,
    )
    try:
        reader = pcsv.open_csv(source.path, read_options=read, convert_options=convert)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield batch
    except pa.ArrowInvalid as error:
        if "straddl" in str(error):  # "straddling object straddles two block boundaries"
            raise _BlockTooSmall from None
        raise UserError(_explain_csv_error(source, kinds, str(error))) from None


def _wide_blocks(source: _Source, kinds: list[str], mappers: dict[int, _Categories]) -> Iterator[np.ndarray]:
    """A wide file (over WIDE_COLUMNS columns) line by line: each block is (rows, all columns) float32.
    Numbers are parsed by numpy in C; cells numpy does not take (empty, null, true/false, words) one by one."""
    opener = gzip.open if source.path.name.endswith(".gz") else open
    width = len(source.names)
    per_block = max(1, WIDE_BLOCK_BYTES // (4 * width))
    categorical = [j for j, kind in enumerate(kinds) if kind == CATEGORICAL]
    with opener(source.path, "rt", encoding="utf-8-sig", newline="") as handle:
        if source.has_header:
            handle.readline()
        block: list[np.ndarray] = []
        row_number = 0
        for line in handle:
            if not line.strip():
                continue
            row_number += 1
            cells = _split_line(line)
            if len(cells) != width:
                raise UserError(
                    f"{source.label} has rows with different numbers of columns: data row {row_number} has "
                    f"{len(cells)}, the first row {width}."
                )
            codes = {j: mappers[j].code_of(cells[j]) if j in mappers else np.nan for j in categorical}
            for j in codes:
                cells[j] = "nan"
            values = _numbers(cells, source, row_number)
            for j, code in codes.items():
                values[j] = code
            block.append(values)
            if len(block) == per_block:
                yield np.vstack(block)
                block = []
        if block:
            yield np.vstack(block)


def _split_line(line: str) -> list[str]:
    line = line.rstrip("\r\n")
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line]))


def _numbers(cells: list[str], source: _Source, row_number: int) -> np.ndarray:
    try:
        return np.array(cells, dtype=np.float32)
    except ValueError:
        pass
    try:  # empty and null cells, the common reason
        return np.array(["nan" if c.strip() in NULL_TOKENS else c for c in cells], dtype=np.float32)
    except ValueError:
        pass
    values = np.empty(len(cells), dtype=np.float32)
    for j, cell in enumerate(cells):
        try:
            values[j] = cell_value(cell)
        except ValueError:
            raise UserError(
                f"Column '{source.names[j]}' of {source.label} has a non-numeric value '{cell.strip()[:60]}' on "
                f"data row {row_number}, in a column of numbers. Fix the value, or leave the cell empty for a "
                "missing value."
            ) from None
    return values


def _explain_csv_error(source: _Source, kinds: list[str], message: str) -> str:
    match = CONVERSION_ERROR.search(message)
    if match:
        position = int(match.group(1))
        column = source.names[position]
        value = match.group(2)
        row = _find_row(source, column, value)
        where = f" on data row {row}" if row else ""
        if kinds[position] == BOOL:
            return (
                f"Column '{column}' of {source.label} holds true/false values but has '{value[:60]}'{where}. "
                "Use true/false (or 1/0), or leave the cell empty for a missing value."
            )
        return (
            f"Column '{column}' of {source.label} has a non-numeric value '{value[:60]}'{where}, in a column of "
            "numbers. Fix the value, or leave the cell empty for a missing value (a column that is mostly text "
            "is read as categories)."
        )
    if "Expected" in message and "columns" in message:
        return f"{source.label} has rows with different numbers of columns ({message.splitlines()[0][:200]})."
    return f"{source.label} could not be read as CSV: {message.splitlines()[0][:300]}"


def _find_row(source: _Source, column: str, value: str) -> int | None:
    try:
        table = pcsv.read_csv(
            source.path,
            read_options=pcsv.ReadOptions(column_names=source.names, skip_rows=1 if source.has_header else 0),
            convert_options=pcsv.ConvertOptions(column_types={column: pa.string()}, include_columns=[column]),
        )
        index = pc.index(table.column(column), value).as_py()
        return index + 1 if index >= 0 else None
    except Exception:  # only improves the message; never hides the real error
        return None


def _parquet_source(path: Path, label: str) -> _Source | None:
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
    return _Source(path, label, "parquet", names, True, parquet.metadata.num_rows, kinds)


def _parquet_batches(source: _Source) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(source.path).iter_batches(batch_size=65536, columns=source.names)


def inspect_channel(directory: Path, channel: str, content_type: str | None = None) -> Layout:
    """Every file's layout (header, columns, kinds, a row-count bound). Raises UserError with a sentence."""
    files = channel_files(directory)
    if not files:
        raise UserError(
            f"The '{channel}' channel has no data files (nothing under {directory}). "
            "Point the channel at an S3 prefix holding CSV or Parquet files."
        )
    sources: list[_Source] = []
    empty: list[str] = []
    for path in files:
        label = f"file {path.relative_to(directory)} in the '{channel}' channel"
        kind = _kind(path, content_type)
        source = (_parquet_source if kind == "parquet" else _csv_source)(path, label)
        if source is None:
            empty.append(str(path.relative_to(directory)))
            continue
        if sources and source.names != sources[0].names:
            raise UserError(
                f"The columns of {label} ({', '.join(source.names[:12])}) differ from the channel's first "
                f"file ({', '.join(sources[0].names[:12])}). All files of a channel need the same columns."
            )
        sources.append(source)
    if not sources:
        raise UserError(
            f"The '{channel}' channel has no data rows: {', '.join(empty[:5])} "
            f"{'is' if len(empty) == 1 else 'are'} empty. Upload a file with a header row and data rows."
        )
    names = sources[0].names
    if len(names) < 2:
        raise UserError(
            f"The '{channel}' channel has a single column ({names[0]}): it needs the target and at least one feature."
        )
    return Layout(channel, directory, sources, names)


@dataclass
class Columns:
    """What the train channel decides for every channel: the target, the features and each column's kind
    (by position: a headerless channel is matched to the train channel's columns by position)."""

    names: list[str]
    kinds: list[str]
    target: int
    features: list[int]
    headerless: bool
    target_given: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def target_name(self) -> str:
        return self.names[self.target]

    @property
    def feature_names(self) -> list[str]:
        return [self.names[j] for j in self.features]


def plan_columns(train: Layout, target: str | None) -> Columns:
    names = train.names
    left_out: set[int] = set()
    notes = []
    if not train.headerless and UNNAMED_INDEX.match(names[0]):
        label = train.sources[0].label
        if not target:
            raise UserError(
                f"The first column of {label} has no name: it is the row index pandas writes unless told "
                "index=False, not a target. Set the target hyperparameter to the target column's name (the "
                "index column is then left out), or write the file with to_csv(..., index=False)."
            )
        left_out.add(0)
        notes.append(f"the unnamed first column ({names[0] or 'empty name'}) is a pandas row index: left out")
    t = _target_index(names, target, train.channel)
    if t in left_out:
        raise UserError(f"The target column '{target}' is the unnamed row index column; name another column.")
    kinds = train.kinds()
    features = [j for j in range(len(names)) if j != t and j not in left_out]
    if not features:
        raise UserError(f"The '{train.channel}' channel has no feature columns besides the target.")
    return Columns(names, [kinds[n] for n in names], t, features, train.headerless, bool(target), notes)


def check_same_columns(layout: Layout, columns: Columns) -> None:
    """Another channel must have the train channel's columns (by name when both have headers)."""
    if not layout.headerless and not columns.headerless and layout.names != columns.names:
        raise UserError(
            f"The {layout.channel} channel's columns differ from the train channel's: "
            f"{', '.join(layout.names[:10])} vs {', '.join(columns.names[:10])}."
        )
    if len(layout.names) != len(columns.names):
        raise UserError(
            f"The {layout.channel} data has {len(layout.names)} columns but the training data has "
            f"{len(columns.names)}. Both channels need the same columns."
        )


class _Categories:
    """Text values to codes, for one column. Train: grows as values appear, sorted at the end. Other
    channels: the train channel's categories, fixed; an unseen value becomes `unseen_code`."""

    def __init__(self, fixed: list[str] | None = None, unseen_code: float = np.nan) -> None:
        self.index: dict[str, int] = {v: i for i, v in enumerate(fixed)} if fixed is not None else {}
        self.fixed = fixed is not None
        self.unseen_code = unseen_code
        self.unseen_count = 0
        self.unseen_examples: list[str] = []

    def codes(self, array: pa.Array) -> np.ndarray:
        if not pa.types.is_dictionary(array.type):
            array = pc.dictionary_encode(array)
        values = array.dictionary.to_pylist()
        lookup = np.empty(len(values) + 1, dtype=np.float32)
        lookup[-1] = np.nan  # null indices map here
        unseen = np.zeros(len(values) + 1, dtype=bool)
        for i, value in enumerate(values):
            code = self.index.get(value)
            if code is None and not self.fixed:
                code = self.index[value] = len(self.index)
            if code is None:
                lookup[i] = self.unseen_code
                unseen[i] = True
                if len(self.unseen_examples) < 5:
                    self.unseen_examples.append(value)
            else:
                lookup[i] = code
        indices = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        if unseen.any():
            self.unseen_count += int(unseen[indices].sum())
        return lookup[indices]

    def code_of(self, value: str) -> float:
        """One text cell's code (the wide path's per-cell version of `codes`)."""
        if value in NULL_TOKENS:
            return np.nan
        code = self.index.get(value)
        if code is None and not self.fixed:
            code = self.index[value] = len(self.index)
        if code is None:
            self.unseen_count += 1
            if len(self.unseen_examples) < 5:
                self.unseen_examples.append(value)
            return self.unseen_code
        return float(code)

    def sorted_categories(self, column: np.ndarray) -> list[str]:
        """Renumber the codes in `column` (in place) so that categories are sorted; returns them."""
        categories = sorted(self.index)
        if not self.fixed:
            remap = np.empty(len(categories), dtype=np.float32)
            for new, value in enumerate(categories):
                remap[self.index[value]] = new
            valid = ~np.isnan(column)
            column[valid] = remap[column[valid].astype(np.int64)]
        return categories


def _to_float32(array: pa.Array, kind: str, categories: _Categories | None) -> np.ndarray:
    if kind == CATEGORICAL:
        assert categories is not None
        return categories.codes(array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_floating(array.type):
        array = pc.cast(array, pa.float32())  # bool, integers, decimals; nulls stay nulls (NaN below)
    return array.to_numpy(zero_copy_only=False)


def read_channel(
    layout: Layout, columns: Columns, train_categories: dict[str, list[str]] | None = None
) -> tuple[Dataset, Target]:
    """All rows of one channel as a Dataset (task not decided yet) and what is known about its target.

    `train_categories`: None for the train channel (its categories are collected); the train channel's
    categories for the others. Raises UserError with a clear sentence on bad data.
    """
    sources = layout.sources
    kinds = columns.kinds
    t = columns.target
    target_name = columns.target_name
    feature_names = columns.feature_names
    categorical = {j for j in [t, *columns.features] if kinds[j] == CATEGORICAL}
    fixed = train_categories is not None
    mappers = {
        j: _Categories(
            (train_categories or {}).get(columns.names[j], []) if fixed else None,
            UNSEEN if j == t else np.nan,
        )
        for j in categorical
    }
    capacity = sum(s.rows_estimate for s in sources)
    x = np.empty((capacity, len(feature_names)), dtype=np.float32)
    y = np.empty(capacity, dtype=np.float32)
    n = first_rows = 0
    for source in sources:
        file_start = n
        block_bytes = BLOCK_BYTES
        if source.ranges and not categorical and not layout.wide:
            try:
                n = _read_ranges(source, kinds, columns, x, y, file_start, feature_names)
                first_rows = first_rows or n
                continue
            except _BlockTooSmall:
                pass  # a row longer than a block: the sequential reader below grows its blocks
        while True:
            n = file_start
            try:
                for batch in _batches(source, kinds, mappers, block_bytes, layout.wide):
                    rows = batch.shape[0] if isinstance(batch, np.ndarray) else batch.num_rows
                    if n + rows > capacity:  # only if a file changed since it was counted: grow by half
                        capacity = max(n + rows, capacity + capacity // 2)
                        x = np.resize(x, (capacity, len(feature_names)))
                        y = np.resize(y, capacity)
                    if isinstance(batch, np.ndarray):  # the wide path: every column, converted already
                        y[n : n + rows] = batch[:, t]
                        x[n : n + rows] = batch[:, columns.features]
                    else:
                        y[n : n + rows] = _to_float32(batch.column(t), kinds[t], mappers.get(t))
                        for i, j in enumerate(columns.features):
                            x[n : n + rows, i] = _to_float32(batch.column(j), kinds[j], mappers.get(j))
                    _check_finite(
                        x[n : n + rows], y[n : n + rows], n - file_start, source, target_name, feature_names
                    )
                    n += rows
                break
            except _BlockTooSmall:  # a row longer than the block (a long text cell): bigger blocks
                if block_bytes > source.path.stat().st_size:
                    raise UserError(f"{source.label} could not be split into rows.") from None
                block_bytes *= 8
        first_rows = first_rows or n
    pa.default_memory_pool().release_unused()  # hand Arrow's parse buffers back before training
    if n == 0:
        raise UserError(
            f"The '{layout.channel}' channel has no data rows: its files hold only a header. "
            "Upload files with data rows."
        )
    x, y = x[:n], y[:n]  # views: no copy
    if not fixed and not columns.target_given and _counts_rows(y[:first_rows]):
        raise UserError(
            f"The first column of the '{layout.channel}' channel ('{target_name}') counts 0, 1, 2, ... like a row "
            "index, so it cannot be the target. Write the file without the index (pandas: to_csv(..., "
            "index=False)), or set the target hyperparameter to the target column's name."
        )
    missing = np.isnan(y)
    if missing.any():
        first = int(np.argmax(missing)) + 1
        raise UserError(
            f"The target column '{target_name}' has {int(missing.sum())} missing value(s) in the "
            f"'{layout.channel}' channel (first at data row {first}). Every row needs a target value."
        )
    categories: dict[str, list[str]] = {}
    for i, j in enumerate(columns.features):
        if j in mappers:
            name = columns.names[j]
            categories[name] = mappers[j].sorted_categories(x[:, i])
            if mappers[j].unseen_count:
                examples = ", ".join(f"'{v}'" for v in mappers[j].unseen_examples[:3])
                print(
                    f"note: in the '{layout.channel}' channel, '{name}' has {mappers[j].unseen_count} value(s) "
                    f"the training data does not have (e.g. {examples}); they are missing values",
                    file=sys.stderr,
                    flush=True,
                )
    if kinds[t] == CATEGORICAL:
        labels = mappers[t].sorted_categories(y)
        target = Target(CATEGORICAL, labels, tuple(mappers[t].unseen_examples))
    else:
        target = Target(kinds[t])
    n_files = len(sources)
    source_text = f"'{layout.channel}' channel ({n_files} file{'s' if n_files != 1 else ''})"
    dataset = Dataset(
        x=x,
        y=y,
        feature_names=feature_names,
        target_name=target_name,
        source=source_text,
        categories=categories,
    )
    return dataset, target


class _Slice:
    """Bytes [start, end) of a file as a read-only stream, for one parallel reader."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.handle = path.open("rb", buffering=0)
        self.handle.seek(start)
        self.left = end - start
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        chunk = self.handle.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(chunk)
        return chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.handle.close()
        self.closed = True


def _read_ranges(
    source: _Source,
    kinds: list[str],
    columns: Columns,
    x: np.ndarray,
    y: np.ndarray,
    file_start: int,
    feature_names: list[str],
) -> int:
    """A big plain CSV file with numeric and true/false columns, one byte range per thread, each writing its
    own rows of x and y (numpy and pyarrow release the GIL for the work). Returns the row after the file."""
    types = {NUMERIC: pa.float32(), BOOL: pa.bool_()}
    convert = pcsv.ConvertOptions(
        column_types={name: types[kind] for name, kind in zip(source.names, kinds, strict=True)}
    )
    offsets = np.cumsum([file_start] + [lines for _, _, lines in source.ranges]).tolist()
    t = columns.target

    def read(k: int) -> int:
        start, end, lines = source.ranges[k]
        n = offsets[k]
        options = pcsv.ReadOptions(column_names=source.names, block_size=BLOCK_BYTES)
        stream = _Slice(source.path, start, end)
        try:
            for batch in pcsv.open_csv(stream, read_options=options, convert_options=convert):
                rows = batch.num_rows
                if n + rows > offsets[k] + lines:  # more rows than lines: the file changed under us
                    raise UserError(f"{source.label} changed while it was being read.")
                y[n : n + rows] = _to_float32(batch.column(t), kinds[t], None)
                for i, j in enumerate(columns.features):
                    x[n : n + rows, i] = _to_float32(batch.column(j), kinds[j], None)
                _check_finite(
                    x[n : n + rows],
                    y[n : n + rows],
                    n - file_start,
                    source,
                    columns.target_name,
                    feature_names,
                )
                n += rows
        except pa.ArrowInvalid as error:
            if "straddl" in str(error):
                raise _BlockTooSmall from None
            raise UserError(_explain_csv_error(source, kinds, str(error))) from None
        finally:
            stream.close()
        return n - offsets[k]

    with ThreadPoolExecutor(len(source.ranges)) as pool:
        counts = list(pool.map(read, range(len(source.ranges))))
    _trim_heap()
    # Blank lines are lines but not rows: close the gaps they leave between the ranges' rows.
    n = file_start
    for k, count in enumerate(counts):
        if offsets[k] != n:
            for step in range(0, count, 65536):
                rows = min(65536, count - step)
                x[n + step : n + step + rows] = x[offsets[k] + step : offsets[k] + step + rows]
                y[n + step : n + step + rows] = y[offsets[k] + step : offsets[k] + step + rows]
        n += count
    return n


def _trim_heap() -> None:
    """Give the reader threads' freed heap back to the system before training (glibc keeps a heap per
    thread; measured: 15-50 MB of peak RSS in the 1M x 20 bench). A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _batches(
    source: _Source, kinds: list[str], mappers: dict[int, _Categories], block_bytes: int, wide: bool
) -> Iterator[pa.RecordBatch | np.ndarray]:
    if source.kind == "parquet":
        return _parquet_batches(source)
    if wide:
        return _wide_blocks(source, kinds, mappers)
    return _csv_batches(source, kinds, block_bytes)


def _check_finite(
    x: np.ndarray, y: np.ndarray, offset: int, source: _Source, target_name: str, feature_names: list[str]
) -> None:
    """inf (or a number beyond float32, which reads as inf) fails here with a sentence, not later inside the
    model (a native library's error may carry a C++ backtrace). NaN is a missing value and passes."""
    bad_y = np.isinf(y)
    bad_x = np.isinf(x)
    if not (bad_y.any() or bad_x.any()):
        return
    rows = np.flatnonzero(bad_y | bad_x.any(axis=1))
    row = int(rows[0])
    where = (
        f"The target column '{target_name}'"
        if bad_y[row]
        else f"Column '{feature_names[int(np.argmax(bad_x[row]))]}'"
    )
    raise UserError(
        f"{where} of {source.label} has an infinite value (inf, or a number too large for 32-bit floats, "
        f"beyond ±3.4e38) on data row {offset + row + 1}. Replace it with a finite number, or leave the cell "
        "empty for a missing value."
    )


def _counts_rows(y: np.ndarray) -> bool:
    """A first column 0, 1, 2, ... (or 1, 2, 3, ...) in the first file: a row index, never a target."""
    return y.size >= 10 and y[0] in (0.0, 1.0) and bool(np.all(np.diff(y) == 1))


def _target_index(names: list[str], target: str | None, channel: str) -> int:
    if not target:
        return 0
    if target in names:
        return names.index(target)
    if names[0] == "c0":  # headerless CSV: a column number is accepted
        if target.isdigit() and int(target) < len(names):
            return int(target)
        raise UserError(
            f"The target column '{target}' cannot be found by name: the '{channel}' data has no header row. "
            "Add a header row, or leave the target hyperparameter unset to use the first column."
        )
    raise UserError(
        f"The target column '{target}' is not in the '{channel}' data. Its columns are: "
        f"{', '.join(names[:20])}{', ...' if len(names) > 20 else ''}. Set the target hyperparameter to one of them."
    )


def describe(dataset: Dataset) -> str:
    text = f"{dataset.x.shape[0]:,} rows x {dataset.x.shape[1]} features from the {dataset.source}"
    if dataset.categories:
        shown = ", ".join(f"{name} ({len(values)})" for name, values in list(dataset.categories.items())[:10])
        text += f"; categorical: {shown}{', ...' if len(dataset.categories) > 10 else ''}"
    return text


def channel_content_types(config: dict[str, Any]) -> dict[str, str | None]:
    return {name: (spec or {}).get("ContentType") for name, spec in config.items()}
