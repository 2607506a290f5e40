"""golden.json: rows of the validation channel and this model's answers to them, for the deploy pipeline's
golden test (issue 13).

Where, and why there: the training job's leader writes it to `/opt/ml/output/data/golden.json`, and
SageMaker uploads that folder as `<S3OutputPath>/<job>/output/output.tar.gz` next to `model.tar.gz` (as it
does `model-meta.json`). So it is written by the one process that has both the validation rows and the
trained model, in AWS exactly as locally, and travels with the job the model package names; golden-test
reads it from there (`pipeline_common.endpoints.golden_set_of`). Not in `model.tar.gz`: that is the model
(megabytes to gigabytes), which the test would otherwise download whole for a few rows.

The rows are the validation channel's first file's first `GOLDEN_ROWS` rows without the target, as CSV
lines in the model's feature order (what the API takes, one request per row). The answers are the saved
model's, through the same code `serve` answers `/invocations` with (`InferenceApp` on the model folder, one
request per row), so a staging endpoint serving the packaged model must give the same numbers.

Not written (a log line, never a failed job): no validation channel, rows that cannot be read as CSV
features, or answers that are not numbers (labels, with `output=labels`): the golden test then fails with
the missing file, which is the truth about that model.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

GOLDEN_FILE = "golden.json"  # pipeline_common.endpoints.GOLDEN_NAME (a test holds them equal)
GOLDEN_ROWS = 1000  # the golden_test config's largest `rows`
CONTENT_TYPE = "text/csv"


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def feature_lines(directory: Path, target: str | None, count: int = GOLDEN_ROWS) -> list[str]:
    """Up to `count` rows of the channel's first file without the target, each a CSV line of the features
    in training column order; read with the training reader, so the same data rules apply."""
    from sagemaker_contract.data import inspect_channel, plan_columns
    from sagemaker_contract.errors import UserError
    from sagemaker_contract.readers import BLOCK_BYTES, batches

    layout = inspect_channel(directory, "validation")
    columns = plan_columns(layout, target)
    if layout.wide:
        raise UserError(f"the validation rows have {len(layout.names)} columns: too wide for a golden set")
    lines: list[str] = []
    for batch in batches(layout.sources[0], columns.kinds, {}, BLOCK_BYTES, wide=False):
        table = batch.slice(0, count - len(lines))
        values = [table.column(name).to_pylist() for name in columns.feature_names]
        for i in range(table.num_rows):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow([_csv_cell(column[i]) for column in values])
            lines.append(buffer.getvalue())
        if len(lines) >= count:
            break
    return lines


def answers(model_dir: Path, plugin: Any, lines: list[str]) -> list[float]:
    """The saved model's answer to each line, as `serve` gives it (one POST /invocations per line)."""
    from sagemaker_contract.serving import InferenceApp

    app = InferenceApp(model_dir, plugin)
    predictions: list[float] = []
    for line in lines:
        body = f"{line}\n".encode()
        status: list[str] = []
        environ = {
            "PATH_INFO": "/invocations",
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": CONTENT_TYPE,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        answer = b"".join(app(environ, lambda code, headers, *_, seen=status: seen.append(code))).decode()
        if not status or not status[0].startswith("200"):
            raise ValueError(f"the model answered {status[0] if status else '?'}: {answer.strip()[:200]}")
        predictions.append(float(answer.strip().splitlines()[0].split(",")[0]))
    return predictions


def write(
    output_data_dir: Path, validation_dir: Path | None, model_dir: Path, plugin: Any, target: str | None
) -> str:
    """Write golden.json when it can be; what happened, as one log line."""
    if validation_dir is None or not validation_dir.is_dir():
        return "no golden set: the job has no validation channel"
    try:
        lines = feature_lines(validation_dir, target)
        if not lines:
            return "no golden set: the validation channel has no rows"
        predictions = answers(model_dir, plugin, lines)
    except Exception as error:  # a golden set is evidence for the deploy, never a reason to fail training
        return (
            f"no golden set: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        )
    output_data_dir.mkdir(parents=True, exist_ok=True)
    body = {"content_type": CONTENT_TYPE, "rows": lines, "predictions": predictions}
    (output_data_dir / GOLDEN_FILE).write_text(json.dumps(body))
    return f"golden set: {len(lines)} validation rows and the model's answers in {GOLDEN_FILE}"
