"""Reading a channel (/opt/ml/input/data/<channel>/): CSV and Parquet tables as data scientists have them.

This module is the channel: its files' layouts (`inspect_channel`), the columns the train channel decides for
every channel (`plan_columns`: target, features, kinds), and its rows as a Dataset (`read_channel`). One file's
layout is sources.py, what a cell, column and header are is cells.py, and turning a file into rows is
readers.py.

- Files: CSV (`.csv`, `.csv.gz`, `.txt`) or Parquet, one file or many (recursively; hidden files, `_SUCCESS`
  and empty part files are skipped).
- CSV: a header row is detected (see `cells.detect_header`: also a header of numbers as pandas writes it, and
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

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sagemaker_contract.cells import BOOL, CATEGORICAL, NUMERIC
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset
from sagemaker_contract.readers import (
    BLOCK_BYTES,
    BlockTooSmall,
    Categories,
    batches,
    check_finite,
    read_ranges,
    to_float32,
)
from sagemaker_contract.sources import Source, channel_files, csv_source, file_kind, parquet_source
from sagemaker_contract.tasks import UNSEEN, Target

CSV_TYPES = ("text/csv", "csv", "text/csv;label_size=1")
# The row index pandas writes as an unnamed first CSV column (`to_csv` without index=False; "Unnamed: 0" once
# read back and written again). The index it stores in Parquet is dropped by sources.py.
UNNAMED_INDEX = re.compile(r"^(|Unnamed: 0)$")
# Wider than this, pyarrow's CSV reader (per-column builders) is the slow, memory-hungry part: measured here,
# 2 rows x 500k columns took 44 s and 4.3 GB. Such files are parsed line by line with numpy instead (0.7 s).
WIDE_COLUMNS = 2000


@dataclass
class Layout:
    """A channel's files and columns, before any row is read."""

    channel: str
    directory: Path
    sources: list[Source]
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


def inspect_channel(
    directory: Path, channel: str, content_type: str | None = None, files: list[Path] | None = None
) -> Layout:
    """Every file's layout (header, columns, kinds, a row-count bound). Raises UserError with a sentence.

    `files`: a subset of the channel's files (this host's share in a multi-host job); None: all of them."""
    files = channel_files(directory) if files is None else files
    if not files:
        raise UserError(
            f"The '{channel}' channel has no data files (nothing under {directory}). "
            "Point the channel at an S3 prefix holding CSV or Parquet files."
        )
    sources: list[Source] = []
    empty: list[str] = []
    for path in files:
        label = f"file {path.relative_to(directory)} in the '{channel}' channel"
        kind = file_kind(path, content_type)
        source = (parquet_source if kind == "parquet" else csv_source)(path, label)
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


def plan_columns(train: Layout, target: str | None, kinds: dict[str, str] | None = None) -> Columns:
    """`kinds`: every column's kind agreed by all hosts of a multi-host job (None: from this layout)."""
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
    kinds = train.kinds() if kinds is None else kinds
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


def read_channel(
    layout: Layout,
    columns: Columns,
    train_categories: dict[str, list[str]] | None = None,
    allow_empty: bool = False,
) -> tuple[Dataset, Target]:
    """All rows of one channel as a Dataset (task not decided yet) and what is known about its target.

    `train_categories`: None for the train channel (its categories are collected); the train channel's
    categories for the others. `allow_empty`: a host of a multi-host job whose share of the rows is empty
    still joins the training. Raises UserError with a clear sentence on bad data.
    """
    sources = layout.sources
    kinds = columns.kinds
    t = columns.target
    target_name = columns.target_name
    feature_names = columns.feature_names
    categorical = {j for j in [t, *columns.features] if kinds[j] == CATEGORICAL}
    fixed = train_categories is not None
    mappers = {
        j: Categories(
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
        if source.ranges and not categorical and not layout.wide and source.window is None:
            try:
                n = read_ranges(source, kinds, columns, x, y, file_start, feature_names)
                first_rows = first_rows or n
                continue
            except BlockTooSmall:
                pass  # a row longer than a block: the sequential reader below grows its blocks
        while True:
            n = file_start
            try:
                for batch in _window(
                    batches(source, kinds, mappers, block_bytes, layout.wide), source.window
                ):
                    rows = batch.shape[0] if isinstance(batch, np.ndarray) else batch.num_rows
                    if n + rows > capacity:  # only if a file changed since it was counted: grow by half
                        capacity = max(n + rows, capacity + capacity // 2)
                        x = np.resize(x, (capacity, len(feature_names)))
                        y = np.resize(y, capacity)
                    if isinstance(batch, np.ndarray):  # the wide path: every column, converted already
                        y[n : n + rows] = batch[:, t]
                        x[n : n + rows] = batch[:, columns.features]
                    else:
                        y[n : n + rows] = to_float32(batch.column(t), kinds[t], mappers.get(t))
                        for i, j in enumerate(columns.features):
                            x[n : n + rows, i] = to_float32(batch.column(j), kinds[j], mappers.get(j))
                    check_finite(
                        x[n : n + rows], y[n : n + rows], n - file_start, source, target_name, feature_names
                    )
                    n += rows
                break
            except BlockTooSmall:  # a row longer than the block (a long text cell): bigger blocks
                if block_bytes > source.path.stat().st_size:
                    raise UserError(f"{source.label} could not be split into rows.") from None
                block_bytes *= 8
        first_rows = first_rows or n
    pa.default_memory_pool().release_unused()  # hand Arrow's parse buffers back before training
    if n == 0 and not allow_empty:
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


def _window(
    blocks: Iterator[pa.RecordBatch | np.ndarray], window: tuple[int, int] | None
) -> Iterator[pa.RecordBatch | np.ndarray]:
    """Only the rows [start, stop) of a file's blocks; stops reading after `stop`. The rows before `start` are
    parsed and dropped: a file has no index of where its rows start."""
    if window is None:
        yield from blocks
        return
    start, stop = window
    if stop <= start:
        return
    seen = 0
    for block in blocks:
        rows = block.shape[0] if isinstance(block, np.ndarray) else block.num_rows
        lo, hi = max(start - seen, 0), min(stop - seen, rows)
        seen += rows
        if hi > lo:
            yield block[lo:hi] if isinstance(block, np.ndarray) else block.slice(lo, hi - lo)
        if seen >= stop:
            return


def with_windows(layout: Layout, windows: list[tuple[int, int, int]]) -> Layout:
    """The layout restricted to (source index, first row, stop row) parts: a host's rows of the channel."""
    sources = [
        replace(
            layout.sources[index],
            window=(lo, hi),
            rows_estimate=max(min(hi, layout.sources[index].rows_estimate) - lo, 0),
        )
        for index, lo, hi in windows
    ]
    return Layout(layout.channel, layout.directory, sources, layout.names)


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
