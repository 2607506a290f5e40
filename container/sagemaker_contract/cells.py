"""What a CSV cell, column and header line are: one definition for training (data.py) and serving.

A cell is a number, a missing value (pyarrow's null tokens: "", NA, N/A, NaN, nan, null, NULL, ...) or
true/false (1/0). A column is numeric, bool or categorical (text) by its sampled cells. A header line is told
from a data line by comparing it with the lines below it.
"""

from __future__ import annotations

import csv
import itertools
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

csv.field_size_limit(sys.maxsize)  # a cell may be as long as a row: its limit is memory, not 128 KB

NUMERIC, BOOL, CATEGORICAL = "numeric", "bool", "categorical"
# What pyarrow reads as a missing value in a CSV cell (its defaults: "", NA, N/A, NaN, nan, null, NULL, ...).
NULL_TOKENS = frozenset(pcsv.ConvertOptions().null_values)
TRUE_TOKENS = frozenset(pcsv.ConvertOptions().true_values)  # 1, True, TRUE, true
FALSE_TOKENS = frozenset(pcsv.ConvertOptions().false_values)  # 0, False, FALSE, false
BOOL_WORDS = frozenset({"true", "false"})
NUMERIC_SHARE = 0.95  # a column whose sampled values are at least this share numbers is numeric
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
