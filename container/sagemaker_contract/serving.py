"""The inference WSGI app: `GET /ping`, `POST /invocations` (and `GET /execution-parameters` for batch transform).

Lean on purpose (no web framework): per request it is one body read, one numpy/pyarrow parse, one call of
the model's `predict` and one formatted response, which is where the speed over the classic Flask + pandas
predictor comes from (see bench/serve.py).

The feature names, the categories of text columns and the class labels come from the contract's
model-meta.json next to the model, whatever the model is.

Request types: text/csv (no header, or a header line that is skipped; quoted cells; text cells of
categorical features), application/json (`{"instances": [[...], ...]}`, `[[...], ...]`, one flat row `[...]`,
`{"features": [...]}` objects or records by feature name in `instances`) and application/x-parquet (columns
by name). Response type from Accept: text/csv or application/json (default: the request's own type, JSON for
Parquet), with an optional `output=labels` or `output=probabilities` parameter. Bad payloads get 4xx with a
one-line reason.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagemaker_contract.cells import (
    cell_value,
    is_number,
    is_numeric_arrow_type,
    is_text_arrow_type,
    looks_like_header,
)
from sagemaker_contract.content_types import CSV, JSON, PARQUET
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import ModelPlugin, load_model_plugin
from sagemaker_contract.meta import ModelMeta, is_saved_in
from sagemaker_contract.metrics import class_probabilities

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoint limit
# Below SMALL_CSV_BYTES + SMALL_CSV_BYTES_PER_COLUMN x columns, pure-Python splitting beats pyarrow's streaming
# CSV reader, whose set-up costs ~140 us per call plus ~7 us per column (CPU time measured per shape: the
# crossover sits near 6 KiB at 8 columns, 12 KiB at 30 and 30 KiB at 100). The streaming reader on the body's
# buffer costs ~150 us less per call than `read_csv` on a BytesIO at every size measured. Very wide rows stay
# on the Python path, whose memory is a small multiple of the body (pyarrow's per-column cost is not).
SMALL_CSV_BYTES = 4 * 1024
SMALL_CSV_BYTES_PER_COLUMN = 280
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
class Schema:
    """The features a model takes, from model-meta.json: names, and for a text (categorical) column the
    training data's categories. A request's text cell maps to its category code; an unseen one, to missing."""

    def __init__(self, feature_names: list[str], categories: dict[str, list[str]]) -> None:
        self.names = feature_names
        self.width = len(feature_names)
        self.codes = {
            j: {value: float(code) for code, value in enumerate(categories[name])}
            for j, name in enumerate(feature_names)
            if name in categories
        }

    def convert(self, rows: list[list[Any]], what: str = "row") -> np.ndarray:
        """Rows of cells (text, numbers, booleans, None) to the float32 matrix, column by column."""
        for number, row in enumerate(rows, start=1):
            if len(row) != self.width:
                raise BadRequest(
                    f"{what.capitalize()} {number} has {len(row)} values but the model takes {self.width}."
                )
        matrix = np.empty((len(rows), self.width), dtype=np.float32)
        for j in range(self.width):
            column = [row[j] for row in rows]
            lookup = self.codes.get(j)
            if lookup is not None:
                matrix[:, j] = [lookup.get(_text(cell), np.nan) for cell in column]
                continue
            try:
                matrix[:, j] = np.array(column, dtype=np.float32)  # numbers (and numeric text), in C
            except (ValueError, TypeError):
                matrix[:, j] = [
                    _number(cell, number, self.names[j], what) for number, cell in enumerate(column, 1)
                ]
        return matrix


def _text(cell: Any) -> str | None:
    if cell is None:
        return None
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)  # a JSON 3.0 for the category "3"
    return str(cell).strip()


def _number(cell: Any, row: int, column: str, what: str) -> float:
    if cell is None:
        return float("nan")
    if isinstance(cell, bool | int | float):
        return float(cell)
    try:
        return cell_value(str(cell))
    except ValueError:
        raise BadRequest(
            f"{what.capitalize()} {row} has a non-numeric value '{str(cell).strip()[:40]}' for the numeric "
            f"feature '{column}'; send numbers only."
        ) from None


def _split_csv(text: str) -> list[list[str]]:
    if '"' in text:  # quoted cells may hold commas: the csv module
        import csv

        return [row for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]
    return [line.split(",") for line in text.splitlines() if line.strip()]


def _is_header(row: list[str], schema: Schema | None) -> bool:
    cells = [c.strip().strip('"') for c in row]
    if schema is not None and cells == schema.names:
        return True
    if schema is not None and schema.codes:
        # With text features a data row may have no numeric cell: a header only where numbers belong.
        numeric = [c for j, c in enumerate(cells) if j not in schema.codes and c]
        return bool(numeric) and not any(is_number(c) for c in numeric)
    return looks_like_header(row)


def parse_csv(body: bytes, schema: Schema | None = None, width: int | None = None) -> np.ndarray:
    """`width`: the body's `csv_width`, if the caller has it already."""
    categorical = schema is not None and bool(schema.codes)
    if width is None:
        width = csv_width(body)
    if len(body) > SMALL_CSV_BYTES + SMALL_CSV_BYTES_PER_COLUMN * width and not categorical:
        try:
            return _parse_csv_arrow(body)
        except BadRequest:
            pass  # booleans and other cells the fast parser does not take: the general path explains
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The CSV payload is not UTF-8 text.") from None
    rows = _split_csv(text)
    if not rows:
        raise BadRequest("The CSV payload has no rows.")
    if not categorical:
        try:
            return np.array(rows, dtype=np.float32)  # numpy parses the strings in C: the fast path
        except ValueError:
            pass
    # The general path: a header line, text (categorical) cells, empty cells, booleans, ragged rows, bad values.
    if _is_header(rows[0], schema):
        rows = rows[1:]
        if not rows:
            raise BadRequest("The CSV payload has only a header line and no data rows.")
    if schema is not None and schema.codes:
        return schema.convert(rows, "CSV row")
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
        table = pcsv.open_csv(
            pa.BufferReader(body),
            read_options=pcsv.ReadOptions(
                column_names=names, skip_rows=1 if header else 0, use_threads=False
            ),
            convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())),
        ).read_all()
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


def parse_json(body: bytes, schema: Schema | None = None) -> np.ndarray:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise BadRequest(f"The JSON payload is not valid JSON: {error}.") from None
    rows = payload.get("instances", payload.get("inputs")) if isinstance(payload, dict) else payload
    if rows is None:
        raise BadRequest(
            'The JSON payload needs an "instances" list of rows, e.g. {"instances": [[1.0, 2.0]]}.'
        )
    if isinstance(rows, list) and rows and all(isinstance(v, int | float | str) or v is None for v in rows):
        rows = [rows]  # one flat row
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        rows = _records(rows, schema)
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
        raise BadRequest('The JSON payload has no rows: "instances" must be a non-empty list of rows.')
    if schema is None or not schema.codes:
        try:
            matrix = np.array(rows, dtype=np.float32)
            if matrix.ndim == 2:
                return matrix
        except (ValueError, TypeError):
            pass
        try:  # null, true/false and numbers as text; ragged rows and words fail here
            matrix = np.array([[_json_number(cell) for cell in row] for row in rows], dtype=np.float32)
        except (ValueError, TypeError):
            matrix = None
        if matrix is None or matrix.ndim != 2:
            raise BadRequest(
                "The JSON rows must be lists of numbers (null for missing), all of the same length."
            )
        return matrix
    return schema.convert(rows, "JSON row")


def _json_number(cell: Any) -> float:
    if cell is None:
        return float("nan")
    if isinstance(cell, str):
        return cell_value(cell)
    return float(cell)


def _records(rows: list[Any], schema: Schema | None) -> list[Any]:
    """`{"features": [...]}` objects, or records by feature name (extra names ignored, absent ones missing)."""
    if all(isinstance(row, dict) and "features" in row for row in rows):
        return [row["features"] for row in rows]
    if schema is None:
        raise BadRequest('Each object in "instances" needs a "features" list.')
    names = set(schema.names)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not names & set(row):
            raise BadRequest(
                f'JSON row {number} is an object without a "features" list or any of the model\'s feature '
                f"names ({', '.join(schema.names[:10])}{', ...' if schema.width > 10 else ''})."
            )
    return [[row.get(name) for name in schema.names] for row in rows]


def parse_parquet(body: bytes, schema: Schema) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body))
    except (pa.ArrowInvalid, OSError) as error:
        raise BadRequest(f"The payload is not a readable Parquet file: {str(error)[:200]}.") from None
    if table.num_rows == 0:
        raise BadRequest("The Parquet payload has no rows.")
    if set(schema.names) <= set(table.column_names):
        table = table.select(schema.names)  # by name, in the model's order (extra columns ignored)
    if table.num_columns != schema.width:
        return np.empty(
            (table.num_rows, table.num_columns), dtype=np.float32
        )  # the caller explains the width
    matrix = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
    for j, field in enumerate(table.schema):
        column = table.column(j)
        if j in schema.codes and is_text_arrow_type(field.type):
            lookup = schema.codes[j]
            matrix[:, j] = [np.nan if v is None else lookup.get(v, np.nan) for v in column.to_pylist()]
        elif is_numeric_arrow_type(field.type):
            matrix[:, j] = column.cast(pa.float32()).to_numpy()
        else:
            raise BadRequest(
                f"Parquet column '{field.name}' has type {field.type}; send numbers, true/false or text "
                f"{'(a category)' if j in schema.codes else ''}".rstrip()
                + "."
            )
    return matrix


# -- formatting -----------------------------------------------------------------------------------------
def format_csv(predictions: np.ndarray) -> bytes:
    if predictions.ndim == 1:
        return (("%.7g\n" * predictions.size) % tuple(predictions.tolist())).encode()
    row = ",".join(["%.7g"] * predictions.shape[1]) + "\n"
    return ((row * predictions.shape[0]) % tuple(predictions.ravel().tolist())).encode()


def format_json(predictions: np.ndarray) -> bytes:
    """{"predictions": [...]} with 7 significant digits, like the CSV answer: a probability of 1e-9 stays
    1e-09 (rounding to 7 decimals would make it 0, and its log loss infinite)."""
    return b'{"predictions": ' + _json_numbers(predictions).encode() + b"}"


def _json_numbers(values: np.ndarray) -> str:
    if not np.all(np.isfinite(values)):  # JSON has no NaN: null
        return json.dumps(np.where(np.isfinite(values), values, np.nan).tolist()).replace("NaN", "null")
    if values.ndim == 1:
        return ("[" + ",".join(["%.7g"] * values.size) + "]") % tuple(values.tolist())
    row = "[" + ",".join(["%.7g"] * values.shape[1]) + "]"
    return ("[" + ",".join([row] * values.shape[0]) + "]") % tuple(values.ravel().tolist())


def _rounded(value: float) -> float:
    return float(f"{value:.7g}")


def format_labels(predictions: np.ndarray, classes: list[Any], output: str, media: str) -> bytes:
    """`output=labels`: the predicted label per row; `output=probabilities`: the label and every class's
    probability (JSON). Two classes: the label is classes[1] when its probability is at least 0.5, as the
    accuracy metric counts it."""
    probabilities = class_probabilities(predictions, len(classes))
    if len(classes) == 2:
        chosen = (probabilities[:, 1] >= 0.5).astype(np.int64)
    else:
        chosen = probabilities.argmax(axis=1)
    labels = [classes[i] for i in chosen.tolist()]
    if output == "labels" and media == CSV:
        import csv

        sink = io.StringIO()
        csv.writer(sink, lineterminator="\n").writerows([label] for label in labels)
        return sink.getvalue().encode()
    if output == "labels":
        return json.dumps({"predictions": labels}).encode()
    answers = [
        {"label": label, "probabilities": dict(zip(classes, map(_rounded, row), strict=True))}
        for label, row in zip(labels, probabilities.tolist(), strict=True)
    ]
    return json.dumps({"predictions": answers}).encode()


# -- the app --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Invocation:
    """A parsed `/invocations` request, waiting for its rows' predictions."""

    features: np.ndarray
    accept: str  # the answer's media type
    output: str | None  # labels | probabilities | None (the model's raw predictions)


_INTERNAL_ERROR = Response(500, b"Internal error while predicting; see the endpoint logs.\n", "text/plain")


class InferenceApp:
    """One per worker process. Loads the model once; /ping is 200 only when it is loaded."""

    def __init__(self, model_dir: Path, plugin: ModelPlugin | None = None) -> None:
        self.model_dir = model_dir
        self.model: Any = None
        self.load_error = "not loaded yet"
        self.plugin: ModelPlugin | None = plugin
        self.try_load()

    def try_load(self) -> bool:
        if self.model is not None:
            return True
        if not is_saved_in(self.model_dir):
            self.load_error = f"no model in {self.model_dir}"
            return False
        try:
            if self.plugin is None:
                self.plugin = load_model_plugin()
            self.meta = ModelMeta.read(self.model_dir)
            self.model = self.plugin.load(self.model_dir)
        except Exception as error:  # a broken model must show in /ping and the logs, not crash the worker
            reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            self.load_error = f"the model in {self.model_dir} could not be loaded: {reason}"
            log.error(self.load_error)
            return False
        self.feature_names: list[str] = self.meta.feature_names
        self.n_features = len(self.feature_names)
        self.schema = Schema(self.feature_names, self.meta.categories)
        log.info("model loaded from %s (%d features)", self.model_dir, self.n_features)
        return True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """WSGI: one request, predicted on its own (the server's bridge predicts through a batcher instead)."""
        outcome = self.handle(environ)
        if isinstance(outcome, Invocation):
            try:
                predictions = self.predict(outcome.features)
            except Exception:
                outcome = self.prediction_failed()
            else:
                outcome = self.answer(outcome, predictions)
        return _respond(start_response, outcome.status, outcome.body, outcome.content_type)

    def handle(self, environ: dict[str, Any]) -> Response | Invocation:
        """Everything before the prediction: a finished response (ping, errors), or a parsed invocation."""
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/invocations":
                if method != "POST":
                    raise BadRequest("Use POST for /invocations.", 405)
                return self._parse_invocation(environ)
            if path == "/ping":
                if method not in ("GET", "HEAD"):
                    raise BadRequest("Use GET for /ping.", 405)
                if self.try_load():
                    return Response(200, b"", "text/plain")
                return Response(503, f"model not loaded: {self.load_error}\n".encode(), "text/plain")
            if path == "/execution-parameters" and method == "GET":
                workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1))
                body = {
                    "MaxConcurrentTransforms": workers,
                    "BatchStrategy": "MULTI_RECORD",
                    "MaxPayloadInMB": 6,
                }
                return Response(200, json.dumps(body).encode(), JSON)
            raise BadRequest(f"No such path {path}: use GET /ping or POST /invocations.", 404)
        except BadRequest as error:
            return Response(error.status, (str(error) + "\n").encode(), "text/plain")
        except Exception:  # never a traceback to the client; the log has it
            log.exception("unexpected error on %s %s", method, path)
            return _INTERNAL_ERROR

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The model's predictions for these rows, one per row (raises if the model breaks that rule)."""
        assert self.model is not None and self.plugin is not None
        predictions = self.plugin.predict(self.model, features)
        if len(predictions) != len(features):
            raise ValueError(f"the model answered {len(predictions)} predictions for {len(features)} rows")
        return predictions

    def prediction_failed(self) -> Response:
        """The answer to an invocation whose predict raised (called in the `except` that caught it)."""
        log.exception("the model's predict failed")
        return _INTERNAL_ERROR

    def answer(self, invocation: Invocation, predictions: np.ndarray) -> Response:
        """The response for an invocation, from its rows' predictions."""
        try:
            if invocation.output is not None:
                assert self.meta.classes is not None
                body = format_labels(predictions, self.meta.classes, invocation.output, invocation.accept)
                return Response(200, body, invocation.accept)
            if invocation.accept == CSV:
                return Response(200, format_csv(predictions), CSV)
            return Response(200, format_json(predictions), JSON)
        except Exception:
            log.exception("formatting the predictions failed")
            return _INTERNAL_ERROR

    def _check_width(self, width: int) -> None:
        if width != self.n_features:
            names = ", ".join(self.feature_names[:10]) + (", ..." if len(self.feature_names) > 10 else "")
            hint = " (leave out the target column)" if width == self.n_features + 1 else ""
            raise BadRequest(
                f"Each row needs {self.n_features} feature values ({names}), but got {width}{hint}."
            )

    def _parse_invocation(self, environ: dict[str, Any]) -> Invocation:
        if not self.try_load():
            raise BadRequest(f"The model is not loaded: {self.load_error}.", 503)
        body = _read_body(environ)
        content_type = _media_type(environ.get("CONTENT_TYPE")) or CSV
        if content_type in (CSV, "text/plain"):
            # Width first, from the first line alone: a 0.4 MB row of 200k columns cost the parser 1.8 GB.
            width = csv_width(body)
            self._check_width(width)
            features = parse_csv(body, self.schema, width)
        elif content_type == JSON:
            features = parse_json(body, self.schema)
        elif content_type in (PARQUET, "application/parquet", "application/vnd.apache.parquet"):
            features = parse_parquet(body, self.schema)
        else:
            raise BadRequest(f"Unsupported Content-Type {content_type}: use {CSV}, {JSON} or {PARQUET}.", 415)
        self._check_width(features.shape[1])
        accept, output = _accept(environ.get("HTTP_ACCEPT"), content_type)
        if output is not None and (self.meta.task != "classification" or not self.meta.classes):
            raise BadRequest(
                f"output={output}: labels need a classification model, and this model does {self.meta.task}."
            )
        return Invocation(features, accept, output)


def csv_width(body: bytes) -> int:
    """Columns in the first non-blank line (parse_csv skips blank lines), without parsing the rest."""
    stripped = body.lstrip()
    end = stripped.find(b"\n")
    first = stripped if end < 0 else stripped[:end]
    if b'"' in first:  # quoted cells may hold commas
        import csv

        return max(1, len(next(csv.reader([first.decode("utf-8-sig", errors="replace")]), [])))
    return first.count(b",") + 1


OUTPUTS = ("labels", "probabilities")


def _accept(header: str | None, content_type: str) -> tuple[str, str | None]:
    """The answer's media type, and the `output` parameter (labels | probabilities) if the client asked for
    one, e.g. `Accept: application/json; output=probabilities`."""
    default = content_type if content_type in (CSV, JSON) else JSON
    if not header:
        return default, None
    for part in header.split(","):
        media = _media_type(part)
        if media in ("*/*", ""):
            media = default
        elif media in ("text/*", "application/*"):
            media = CSV if media == "text/*" else JSON
        if media not in (CSV, JSON):
            continue
        output = _parameter(part, "output")
        if output is not None and output not in OUTPUTS:
            raise BadRequest(f"Cannot answer {header}: output must be labels or probabilities.", 406)
        if output == "probabilities" and media == CSV:
            raise BadRequest(
                f"Cannot answer {header}: output=probabilities is answered in JSON "
                f"(Accept: {JSON}; output=probabilities); CSV takes output=labels.",
                406,
            )
        return media, output
    raise BadRequest(f"Cannot answer in {header}: Accept {CSV} or {JSON}.", 406)


def _parameter(part: str, name: str) -> str | None:
    for parameter in part.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"').lower()
    return None


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
