"""Turning one file into rows: pyarrow's streaming CSV reader (one byte range per core for a big plain
file), a line-by-line numpy reader for wide files, Parquet batches; text to category codes; the checks a
block of rows gets (non-finite values) and the sentences for what pyarrow rejects.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sagemaker_contract.cells import BOOL, CATEGORICAL, NULL_TOKENS, NUMERIC, cell_value
from sagemaker_contract.errors import UserError
from sagemaker_contract.sources import Source

if TYPE_CHECKING:
    from sagemaker_contract.data import Columns

CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): .*invalid value '(.*)'")
BLOCK_BYTES = 1 << 20
WIDE_BLOCK_BYTES = 8 << 20  # float32 rows converted per step on the wide path


class BlockTooSmall(Exception):
    """A row longer than pyarrow's block: read the file again with bigger blocks."""


def csv_batches(source: Source, kinds: list[str], block_bytes: int = BLOCK_BYTES) -> Iterator[pa.RecordBatch]:
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
            raise BlockTooSmall from None
        raise UserError(explain_csv_error(source, kinds, str(error))) from None


def wide_blocks(source: Source, kinds: list[str], mappers: dict[int, Categories]) -> Iterator[np.ndarray]:
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


def _numbers(cells: list[str], source: Source, row_number: int) -> np.ndarray:
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


def explain_csv_error(source: Source, kinds: list[str], message: str) -> str:
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


def _find_row(source: Source, column: str, value: str) -> int | None:
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


def parquet_batches(source: Source) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(source.path).iter_batches(batch_size=65536, columns=source.names)


class Categories:
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


def to_float32(array: pa.Array, kind: str, categories: Categories | None) -> np.ndarray:
    if kind == CATEGORICAL:
        assert categories is not None
        return categories.codes(array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_floating(array.type):
        array = pc.cast(array, pa.float32())  # bool, integers, decimals; nulls stay nulls (NaN below)
    return array.to_numpy(zero_copy_only=False)


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


def read_ranges(
    source: Source,
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
                y[n : n + rows] = to_float32(batch.column(t), kinds[t], None)
                for i, j in enumerate(columns.features):
                    x[n : n + rows, i] = to_float32(batch.column(j), kinds[j], None)
                check_finite(
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
                raise BlockTooSmall from None
            raise UserError(explain_csv_error(source, kinds, str(error))) from None
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


def batches(
    source: Source, kinds: list[str], mappers: dict[int, Categories], block_bytes: int, wide: bool
) -> Iterator[pa.RecordBatch | np.ndarray]:
    if source.kind == "parquet":
        return parquet_batches(source)
    if wide:
        return wide_blocks(source, kinds, mappers)
    return csv_batches(source, kinds, block_bytes)


def check_finite(
    x: np.ndarray, y: np.ndarray, offset: int, source: Source, target_name: str, feature_names: list[str]
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
