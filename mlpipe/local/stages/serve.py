"""Smoke-serve: the image's `serve` on the trained model, with a few rows of the run's data to /invocations.

The rows are read with the container's own reader (`sagemaker_contract.data`), so they follow the same data
rules as training: validation rows, else train rows; CSV, gzip CSV or Parquet, with or without a header; the
target dropped by name (the `target` hyperparameter, else the first column), and a pandas index column left
out. Rows with column names go as JSON records by feature name (the server matches them by name and maps
categories), headerless rows as CSV in the training column order.

A run that trained is not failed here for a data-format reason (rows that cannot be picked, or a 4xx for
them): that is a warning. A model server that does not start or answers 5xx still fails the stage.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagemaker_contract.data import inspect_channel, plan_columns
from sagemaker_contract.errors import UserError
from sagemaker_contract.readers import BLOCK_BYTES, batches

from mlpipe.local import containers
from mlpipe.local.console import StageFailed, note, warn
from mlpipe.local.state import RunState

REQUESTS = 20
ROWS = 5
CHANNELS = ("validation", "train")  # the rows a model did not fit on first


@dataclass(frozen=True)
class SmokeRequest:
    channel: str
    body: bytes
    content_type: str
    shown: list[str]  # one line per row, for the console


def download_model(s3: Any, model_uri: str, model_dir: Path) -> None:
    bucket, _, key = model_uri.removeprefix("s3://").partition("/")
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        tar.extractall(model_dir, filter="data")
    model_dir.chmod(0o755)


def _json_value(value: Any) -> Any:
    """A cell as JSON: NaN and None are missing (null), numbers and text as they are."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def feature_rows(directory: Path, channel: str, target: str | None, count: int = ROWS) -> SmokeRequest:
    """Up to `count` rows of the channel's first file without the target, as a request body. Raises UserError
    (the container's sentence) when the data cannot be read the way training reads it."""
    layout = inspect_channel(directory, channel)
    columns = plan_columns(layout, target)
    if layout.wide:
        raise UserError(f"the {channel} rows have {len(layout.names)} columns: too wide to show")
    source = layout.sources[0]
    batch = next(iter(batches(source, columns.kinds, {}, BLOCK_BYTES, wide=False)), None)
    if batch is None or batch.num_rows == 0:
        raise UserError(f"{source.label} has no rows")
    table = batch.slice(0, count)
    # Dictionary-encoded text comes back as its values; float32 as float.
    values = {name: table.column(name).to_pylist() for name in columns.feature_names}
    rows = [{name: values[name][i] for name in columns.feature_names} for i in range(table.num_rows)]
    if columns.headerless:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row.values()])
        shown = buffer.getvalue().splitlines()
        return SmokeRequest(channel, buffer.getvalue().encode(), "text/csv", shown)
    records = [{name: _json_value(v) for name, v in row.items()} for row in rows]
    shown = [json.dumps(record, default=str) for record in records]
    return SmokeRequest(channel, json.dumps({"instances": records}).encode(), "application/json", shown)


def pick_rows(data_dir: Path, target: str | None) -> tuple[SmokeRequest | None, list[str]]:
    """Validation rows, else train rows; (None, why not) when neither can be read."""
    reasons = []
    for channel in CHANNELS:
        directory = data_dir / channel
        if not directory.is_dir():
            reasons.append(f"no {channel}/ folder")
            continue
        try:
            return feature_rows(directory, channel, target), reasons
        except UserError as error:
            reasons.append(f"{channel}: {error}")
    return None, reasons


def predictions_of(body: bytes, content_type: str) -> list[str]:
    text = body.decode(errors="replace")
    if content_type.startswith("application/json"):
        try:
            answer = json.loads(text)
            predictions = answer.get("predictions", answer) if isinstance(answer, dict) else answer
            return [json.dumps(p) if not isinstance(p, str) else p for p in predictions]
        except (ValueError, TypeError, AttributeError):
            return [text[:200]]
    return text.split()


def run(state: RunState) -> None:
    target = (state.record.get("hyperparameters") or {}).get("target") or None
    request_rows, reasons = pick_rows(state.options.data, target)
    model_dir = state.work / "serve" / "model"
    download_model(state.client("s3"), state.need("model_artifact"), model_dir)
    latencies: list[float] = []
    with containers.serve(state.need("image").tag, model_dir) as base_url:
        # `serve` answered /ping with the model loaded (containers.serve waits for it).
        if request_rows is None:
            warn(f"smoke-serve sent no rows ({'; '.join(reasons)}); the server did start and load the model")
            return
        request = urllib.request.Request(
            f"{base_url}/invocations",
            data=request_rows.body,
            headers={"Content-Type": request_rows.content_type, "Accept": request_rows.content_type},
        )
        for _ in range(REQUESTS):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = response.read()
            except urllib.error.HTTPError as error:
                detail = error.read().decode(errors="replace")[:300]
                if error.code >= 500:
                    raise StageFailed(f"/invocations answered {error.code}: {detail}") from None
                warn(f"/invocations answered {error.code} for the {request_rows.channel} rows: {detail}")
                return
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    predictions = predictions_of(answer, request_rows.content_type)
    for row, prediction in zip(request_rows.shown, predictions, strict=False):
        note(f"{row[:60]:<60} → {prediction}")
    note(
        f"{len(request_rows.shown)} {request_rows.channel} rows per request ({request_rows.content_type}), "
        f"{REQUESTS} requests: p50 {latencies[REQUESTS // 2]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
