"""The inference WSGI app: `GET /ping`, `POST /invocations` (and `GET /execution-parameters` for batch transform).

Lean on purpose (no web framework): per request it is one body read, one numpy/pyarrow parse, one
`Booster.inplace_predict` and one formatted response, which is where the speed over the classic
Flask + pandas predictor comes from (see bench/serve.py).

Request types: text/csv (no header; a header line is skipped when it is not numeric), application/json
(`{"instances": [[...], ...]}`, `[[...], ...]` or one flat row `[...]`; `{"features": [...]}` objects in
`instances` work too) and application/x-parquet. Response type from Accept: text/csv or application/json
(default: the request's own type, JSON for Parquet). Bad payloads get 4xx with a one-line reason.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import user_model

from sagemaker_contract.content_types import CSV, JSON, PARQUET
from sagemaker_contract.data import cell_value, is_number, is_numeric_arrow_type, looks_like_header

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoint limit
# Below SMALL_CSV_BYTES + SMALL_CSV_BYTES_PER_COLUMN x columns, pure-Python splitting beats pyarrow, whose set-up
# costs ~230 us per call plus ~10 us per column (CPU time measured per shape: the crossover sits near 11 KiB at
# 8 columns, 20 KiB at 30 and 42 KiB at 100). The flat 16 KB cutoff this replaces sent narrow bodies of 11-16 KB
# to the slower Python path and wide ones of 16-40 KB to the slower pyarrow one. Very wide rows stay on the
# Python path, whose memory is a small multiple of the body (pyarrow's per-column cost is not).
SMALL_CSV_BYTES = 8 * 1024
SMALL_CSV_BYTES_PER_COLUMN = 320
REASONS = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    406: "406 Not Acceptable",
    411: "411 Length Required",
    413: "413 Payload Too Large",
    415: "415 Unsupported Media Type",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
log = logging.getLogger("sagemaker_contract.serving")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


# -- parsing --------------------------------------------------------------------------------------------
def parse_csv(body: bytes) -> np.ndarray:
    if len(body) > SMALL_CSV_BYTES + SMALL_CSV_BYTES_PER_COLUMN * _csv_width(body):
        return _parse_csv_arrow(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The CSV payload is not UTF-8 text.") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BadRequest("The CSV payload has no rows.")
    rows = [line.split(",") for line in lines]
    try:
        return np.array(rows, dtype=np.float32)  # numpy parses the strings in C: the fast path
    except ValueError:
        pass
    # Slow path for the unusual cases: a header line, empty cells (missing values), ragged rows, bad values.
    if rows and looks_like_header(rows[0]):
        rows = rows[1:]
        if not rows:
            raise BadRequest("The CSV payload has only a header line and no data rows.")
    width = len(rows[0])
    values = []
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise BadRequest(f"CSV row {number} has {len(row)} values but row 1 has {width}.")
        try:
            values.append([cell_value(t) for t in row])
        except ValueError:
            bad = next(t for t in row if not is_number(t))
            raise BadRequest(
                f"CSV row {number} has a non-numeric value '{bad.strip()[:40]}'; send numbers only."
            ) from None
    return np.array(values, dtype=np.float32)


def _parse_csv_arrow(body: bytes) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    first = body[: body.find(b"\n")] if b"\n" in body else body
    header = looks_like_header(first.decode("utf-8", "replace").split(","))
    width = first.count(b",") + 1
    names = [f"c{i}" for i in range(width)]
    try:
        table = pcsv.read_csv(
            io.BytesIO(body),
            read_options=pcsv.ReadOptions(
                column_names=names, skip_rows=1 if header else 0, use_threads=False
            ),
            convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())),
        )
    except pa.ArrowInvalid as error:
        message = str(error).splitlines()[0]
        if "invalid value" in message:
            value = message.rsplit("invalid value", 1)[1].strip(" '")
            raise BadRequest(
                f"The CSV payload has a non-numeric value '{value[:40]}'; send numbers only."
            ) from None
        raise BadRequest(f"The CSV payload could not be parsed: {message[:200]}") from None
    return _table_to_matrix(table)


def _table_to_matrix(table: Any) -> np.ndarray:
    matrix = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
    for j in range(table.num_columns):
        matrix[:, j] = table.column(j).to_numpy()
    return matrix


def parse_json(body: bytes) -> np.ndarray:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise BadRequest(f"The JSON payload is not valid JSON: {error}.") from None
    rows = payload.get("instances", payload.get("inputs")) if isinstance(payload, dict) else payload
    if rows is None:
        raise BadRequest(
            'The JSON payload needs an "instances" list of rows, e.g. {"instances": [[1.0, 2.0]]}.'
        )
    if isinstance(rows, list) and rows and all(isinstance(v, int | float) or v is None for v in rows):
        rows = [rows]  # one flat row
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        try:
            rows = [row["features"] for row in rows]
        except (KeyError, TypeError):
            raise BadRequest('Each object in "instances" needs a "features" list.') from None
    if not isinstance(rows, list) or not rows:
        raise BadRequest('The JSON payload has no rows: "instances" must be a non-empty list of rows.')
    try:
        matrix = np.array(rows, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(
            "The JSON rows must be lists of numbers (null for missing), all of the same length."
        ) from None
    if matrix.ndim != 2:
        raise BadRequest("The JSON rows must be lists of numbers, all of the same length.")
    return matrix


def parse_parquet(body: bytes, feature_names: list[str]) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body))
    except (pa.ArrowInvalid, OSError) as error:
        raise BadRequest(f"The payload is not a readable Parquet file: {str(error)[:200]}.") from None
    if table.num_rows == 0:
        raise BadRequest("The Parquet payload has no rows.")
    if set(feature_names) <= set(table.column_names):
        table = table.select(feature_names)  # by name, in the model's order (extra columns ignored)
    for field in table.schema:
        if not is_numeric_arrow_type(field.type):
            raise BadRequest(
                f"Parquet column '{field.name}' has type {field.type}; send numeric columns only."
            )
    return _table_to_matrix(table.cast(pa.schema([pa.field(f.name, pa.float32()) for f in table.schema])))


# -- formatting -----------------------------------------------------------------------------------------
def format_csv(predictions: np.ndarray) -> bytes:
    if predictions.ndim == 1:
        return (("%.7g\n" * predictions.size) % tuple(predictions.tolist())).encode()
    row = ",".join(["%.7g"] * predictions.shape[1]) + "\n"
    return ((row * predictions.shape[0]) % tuple(predictions.ravel().tolist())).encode()


def format_json(predictions: np.ndarray) -> bytes:
    return json.dumps({"predictions": predictions.astype(np.float64).round(7).tolist()}).encode()


# -- the app --------------------------------------------------------------------------------------------
class InferenceApp:
    """One per worker process. Loads the model once; /ping is 200 only when it is loaded."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.model: user_model.Model | None = None
        self.load_error = "not loaded yet"
        self.try_load()

    def try_load(self) -> bool:
        if self.model is not None:
            return True
        if not user_model.is_saved_in(self.model_dir):
            self.load_error = f"no model in {self.model_dir}"
            return False
        try:
            self.model = user_model.load(self.model_dir)
        except Exception as error:  # a broken model must show in /ping and the logs, not crash the worker
            self.load_error = f"the model in {self.model_dir} could not be loaded: {error}"
            log.error(self.load_error)
            return False
        self.n_features = user_model.num_features(self.model)
        self.feature_names: list[str] = self.model.meta.get("feature_names", [])
        log.info("model loaded from %s (%d features)", self.model_dir, self.n_features)
        return True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/invocations":
                if method != "POST":
                    raise BadRequest("Use POST for /invocations.", 405)
                return self._invoke(environ, start_response)
            if path == "/ping":
                if method not in ("GET", "HEAD"):
                    raise BadRequest("Use GET for /ping.", 405)
                if self.try_load():
                    return _respond(start_response, 200, b"", "text/plain")
                return _respond(
                    start_response, 503, f"model not loaded: {self.load_error}\n".encode(), "text/plain"
                )
            if path == "/execution-parameters" and method == "GET":
                workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1))
                body = {
                    "MaxConcurrentTransforms": workers,
                    "BatchStrategy": "MULTI_RECORD",
                    "MaxPayloadInMB": 6,
                }
                return _respond(start_response, 200, json.dumps(body).encode(), JSON)
            raise BadRequest(f"No such path {path}: use GET /ping or POST /invocations.", 404)
        except BadRequest as error:
            return _respond(start_response, error.status, (str(error) + "\n").encode(), "text/plain")
        except Exception:  # never a traceback to the client; the log has it
            log.exception("unexpected error on %s %s", method, path)
            return _respond(
                start_response,
                500,
                b"Internal error while predicting; see the endpoint logs.\n",
                "text/plain",
            )

    def _check_width(self, width: int) -> None:
        if width != self.n_features:
            names = ", ".join(self.feature_names[:10]) + (", ..." if len(self.feature_names) > 10 else "")
            hint = " (leave out the target column)" if width == self.n_features + 1 else ""
            raise BadRequest(
                f"Each row needs {self.n_features} feature values ({names}), but got {width}{hint}."
            )

    def _invoke(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.try_load():
            raise BadRequest(f"The model is not loaded: {self.load_error}.", 503)
        body = _read_body(environ)
        content_type = _media_type(environ.get("CONTENT_TYPE")) or CSV
        if content_type in (CSV, "text/plain"):
            # Width first, from the first line alone: a 0.4 MB row of 200k columns cost the parser 1.8 GB.
            self._check_width(_csv_width(body))
            features = parse_csv(body)
        elif content_type == JSON:
            features = parse_json(body)
        elif content_type in (PARQUET, "application/parquet", "application/vnd.apache.parquet"):
            features = parse_parquet(body, self.feature_names)
        else:
            raise BadRequest(f"Unsupported Content-Type {content_type}: use {CSV}, {JSON} or {PARQUET}.", 415)
        self._check_width(features.shape[1])
        assert self.model is not None
        predictions = user_model.predict(self.model, features)
        accept = _accept(environ.get("HTTP_ACCEPT"), content_type)
        if accept == CSV:
            return _respond(start_response, 200, format_csv(predictions), CSV)
        return _respond(start_response, 200, format_json(predictions), JSON)


def _csv_width(body: bytes) -> int:
    """Columns in the first non-blank line (parse_csv skips blank lines), without parsing anything."""
    stripped = body.lstrip()
    end = stripped.find(b"\n")
    return (stripped if end < 0 else stripped[:end]).count(b",") + 1


def _accept(header: str | None, content_type: str) -> str:
    default = content_type if content_type in (CSV, JSON) else JSON
    if not header:
        return default
    for part in header.split(","):
        media = _media_type(part)
        if media in (CSV, JSON):
            return media
        if media in ("*/*", "text/*", "application/*", ""):
            return default if media in ("*/*", "") else (CSV if media == "text/*" else JSON)
    raise BadRequest(f"Cannot answer in {header}: Accept {CSV} or {JSON}.", 406)


def _read_body(environ: dict[str, Any]) -> bytes:
    length_header = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length_header:
        try:
            length = int(length_header)
        except ValueError:
            raise BadRequest("Invalid Content-Length.") from None
        if length > MAX_PAYLOAD_BYTES:
            raise BadRequest(
                f"The payload is {length:,} bytes; the limit is {MAX_PAYLOAD_BYTES:,} bytes (6 MB).", 413
            )
        body = stream.read(length)
    else:  # chunked: read at most one byte past the limit
        body = stream.read(MAX_PAYLOAD_BYTES + 1)
        if len(body) > MAX_PAYLOAD_BYTES:
            raise BadRequest(f"The payload is over the limit of {MAX_PAYLOAD_BYTES:,} bytes (6 MB).", 413)
    if not body:
        raise BadRequest("The request body is empty: send rows of features.")
    return body


def _respond(start_response: StartResponse, status: int, body: bytes, content_type: str) -> list[bytes]:
    start_response(REASONS[status], [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def create_app(model_dir: Path | None = None) -> InferenceApp:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(levelname)s %(message)s"
    )
    if model_dir is None:
        from sagemaker_contract.paths import OptMl

        model_dir = OptMl.from_env().model_dir
    return InferenceApp(model_dir)
