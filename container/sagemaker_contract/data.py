"""Reading a channel (/opt/ml/input/data/<channel>/): CSV and Parquet, one file or many.

- CSV: a header row is detected (a first line with no numeric cell); without one, columns are
  named c0, c1, ... (SageMaker built-in algorithm style: headerless, target first). `.csv.gz` works too.
- Parquet: numeric (int, float, bool) columns.
- The target is the column named by the `target` hyperparameter, else the first column.
- Files are parsed by pyarrow straight into float32 (no pandas, no float64 copy), then packed into one
  C-order float32 matrix: peak memory is about one float32 table plus the matrix.
- Empty files among many are skipped (Spark writes empty part files); a channel with no rows is an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from user_model import Dataset

from sagemaker_contract.errors import UserError

CSV_TYPES = ("text/csv", "csv", "text/csv;label_size=1")
PARQUET_TYPES = ("application/x-parquet", "application/parquet", "parquet")
SKIP_NAMES = ("_SUCCESS", "_committed", "_started")
CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): .*invalid value '(.*)'")


def _is_number(token: str) -> bool:
    token = token.strip().strip('"')
    if token == "" or token.lower() in ("nan", "na", "null"):
        return True
    try:
        float(token)
    except ValueError:
        return False
    return True


def looks_like_header(tokens: list[str]) -> bool:
    cells = [t.strip().strip('"') for t in tokens if t.strip().strip('"')]
    return bool(cells) and not any(_is_number(t) for t in cells)


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


def _first_line(path: Path) -> str:
    if path.name.endswith(".gz"):
        import gzip

        with gzip.open(path, "rt", errors="replace") as handle:
            return handle.readline()
    with path.open("r", errors="replace") as handle:
        return handle.readline()


def _read_csv(path: Path, label: str) -> pa.Table | None:
    if path.stat().st_size == 0:
        return None
    line = _first_line(path).rstrip("\r\n")
    if not line.strip():
        return None
    tokens = line.split(",")
    # A header has no numeric cell at all; a data row with one bad cell is garbage, not a header.
    has_header = looks_like_header(tokens)
    names = [t.strip().strip('"') for t in tokens] if has_header else [f"c{i}" for i in range(len(tokens))]
    if has_header and len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"The header row of {label} repeats the column name(s) {', '.join(dupes)}.")
    read = pcsv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0, block_size=16 << 20)
    convert = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32()))
    try:
        table = pcsv.read_csv(path, read_options=read, convert_options=convert)
    except pa.ArrowInvalid as error:
        raise UserError(_explain_csv_error(path, label, names, has_header, str(error))) from None
    return table


def _explain_csv_error(path: Path, label: str, names: list[str], has_header: bool, message: str) -> str:
    match = CONVERSION_ERROR.search(message)
    if match:
        column = names[int(match.group(1))]
        value = match.group(2)
        row = _find_row(path, names, column, value, has_header)
        where = f" on data row {row}" if row else ""
        return (
            f"Column '{column}' of {label} has a non-numeric value '{value[:60]}'{where}. "
            "Every column must be a number (leave the cell empty for a missing value); "
            "encode text and categories as numbers before training."
        )
    if "Expected" in message and "columns" in message:
        return f"{label} has rows with different numbers of columns ({message.splitlines()[0][:200]})."
    return f"{label} could not be read as CSV: {message.splitlines()[0][:300]}"


def _find_row(path: Path, names: list[str], column: str, value: str, has_header: bool) -> int | None:
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0),
            convert_options=pcsv.ConvertOptions(column_types={column: pa.string()}, include_columns=[column]),
        )
        index = pc.index(table.column(column), value).as_py()
        return index + 1 if index >= 0 else None
    except Exception:  # only improves the message; never hides the real error
        return None


def _read_parquet(path: Path, label: str) -> pa.Table | None:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(f"{label} is not a readable Parquet file ({str(error)[:200]}).") from None
    if table.num_rows == 0:
        return None
    for field in table.schema:
        if not (
            pa.types.is_integer(field.type)
            or pa.types.is_floating(field.type)
            or pa.types.is_boolean(field.type)
        ):
            raise UserError(
                f"Column '{field.name}' of {label} has type {field.type}, not a number. Every column must be "
                "numeric; encode text and categories as numbers before training."
            )
    return table.cast(pa.schema([pa.field(f.name, pa.float32()) for f in table.schema]))


def read_channel(
    directory: Path, channel: str, target: str | None, content_type: str | None = None
) -> Dataset:
    """All rows of one channel as a Dataset. Raises UserError with a clear sentence on bad data."""
    files = channel_files(directory)
    if not files:
        raise UserError(
            f"The '{channel}' channel has no data files (nothing under {directory}). "
            "Point the channel at an S3 prefix holding CSV or Parquet files."
        )
    tables: list[pa.Table] = []
    first_names: list[str] | None = None
    empty: list[str] = []
    for path in files:
        label = f"file {path.relative_to(directory)} in the '{channel}' channel"
        table = (_read_parquet if _kind(path, content_type) == "parquet" else _read_csv)(path, label)
        if table is None or table.num_rows == 0:
            empty.append(str(path.relative_to(directory)))
            continue
        if first_names is None:
            first_names = table.column_names
        elif table.column_names != first_names:
            raise UserError(
                f"The columns of {label} ({', '.join(table.column_names[:12])}) differ from the channel's first "
                f"file ({', '.join(first_names[:12])}). All files of a channel need the same columns."
            )
        tables.append(table)
    if not tables:
        raise UserError(
            f"The '{channel}' channel has no data rows: {', '.join(empty[:5])} "
            f"{'is' if len(empty) == 1 else 'are'} empty. Upload a file with a header row and data rows."
        )
    assert first_names is not None
    if len(first_names) < 2:
        raise UserError(
            f"The '{channel}' channel has a single column ({first_names[0]}): it needs the target and at least one feature."
        )
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    del tables
    return _to_dataset(table, first_names, channel, target, len(files) - len(empty))


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


def _to_dataset(table: pa.Table, names: list[str], channel: str, target: str | None, n_files: int) -> Dataset:
    t = _target_index(names, target, channel)
    features = [n for i, n in enumerate(names) if i != t]
    y = table.column(t).to_numpy().astype(np.float32, copy=False)
    missing = np.isnan(y)
    if missing.any():
        first = int(np.argmax(missing)) + 1
        raise UserError(
            f"The target column '{names[t]}' has {int(missing.sum())} missing value(s) in the '{channel}' channel "
            f"(first at data row {first}). Every row needs a target value."
        )
    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        x[:, j] = table.column(name).to_numpy()  # one column at a time: no second full-size temporary
    source = f"'{channel}' channel ({n_files} file{'s' if n_files != 1 else ''})"
    return Dataset(x=x, y=y, feature_names=features, target_name=names[t], source=source)


def describe(dataset: Dataset) -> str:
    return f"{dataset.x.shape[0]:,} rows x {dataset.x.shape[1]} features from the {dataset.source}"


def channel_content_types(config: dict[str, Any]) -> dict[str, str | None]:
    return {name: (spec or {}).get("ContentType") for name, spec in config.items()}
