"""What the container inferred about a trained model (task, objective, classes), for the record and the email.

Where it comes from, and why there:
- **Not the final metrics.** `FinalMetricDataList` holds numbers only, and MetricDefinitions capture numbers;
  a task, an objective or class labels cannot travel that way.
- **Not model.tar.gz.** It holds the model itself (megabytes to gigabytes); a Lambda would download and
  unpack all of it for a few words.
- **The job's output data.** The container writes `model-meta.json` to `/opt/ml/output/data/`, and SageMaker
  uploads that folder as `<S3OutputPath>/<job>/output/output.tar.gz`, next to `model.tar.gz` (a few KB).
  record-status reads it once, on a Completed job, with `s3:GetObject` on exactly that key pattern.

Guarantees: a job without it (a model or an image that writes none) or with an unreadable one is recorded
without `model_meta`, with a log line, never failed; a transient S3 error is raised, so the event is retried
like a failed DescribeTrainingJob. Bounded: an archive over MAX_ARCHIVE_BYTES is not read, at most
MAX_CLASSES labels of at most MAX_LABEL characters are kept (DynamoDB items are at most 400 KB).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Mapping
from typing import Any

from pipeline_common import aws

logger = logging.getLogger(__name__)

OUTPUT_ARCHIVE = "output.tar.gz"
MODEL_ARCHIVE = "model.tar.gz"
META_FILE = "model-meta.json"  # sagemaker_contract.meta.META_FILE (a test holds them equal)
MAX_ARCHIVE_BYTES = 1024 * 1024
MAX_CLASSES = 50
MAX_LABEL = 64
NOT_THERE = frozenset({"NoSuchKey", "404", "NotFound"})


def output_archive_uri(model_artifact: str) -> str | None:
    """`s3://.../<job>/output/output.tar.gz` beside the job's `model.tar.gz`, or None for another layout."""
    if not model_artifact.startswith("s3://") or not model_artifact.endswith(f"/output/{MODEL_ARCHIVE}"):
        return None
    return model_artifact.removesuffix(MODEL_ARCHIVE) + OUTPUT_ARCHIVE


def summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The record's `model_meta`: task, objective, classes (as text) and where the final metrics come from."""
    model = meta.get("model") if isinstance(meta.get("model"), Mapping) else {}
    classes = meta.get("classes")
    fields: dict[str, Any] = {
        "task": meta.get("task"),
        "task_source": meta.get("task_source"),
        "objective": model.get("objective"),  # type: ignore[union-attr]
        "model_name": meta.get("model_name"),
        "final_metrics_channel": meta.get("final_metrics_channel"),
    }
    if isinstance(classes, list):
        fields["classes"] = [str(label)[:MAX_LABEL] for label in classes[:MAX_CLASSES]]
        fields["num_classes"] = len(classes)
    return {k: v if isinstance(v, list | int) else str(v)[:200] for k, v in fields.items() if v is not None}


def read_json_member(body: bytes, name: str) -> dict[str, Any] | None:
    """The JSON object `name` from an output.tar.gz's bytes; None if the archive is unreadable or lacks it."""
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.lstrip("./") == name:
                    handle = archive.extractfile(member)
                    value = json.loads(handle.read()) if handle else None
                    return value if isinstance(value, dict) else None
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        logger.warning("the job's %s is not a readable archive: %s", OUTPUT_ARCHIVE, error)
    return None


def read_meta_from_archive(body: bytes) -> dict[str, Any] | None:
    """model-meta.json from an output.tar.gz's bytes; None if the archive is unreadable or lacks it."""
    return read_json_member(body, META_FILE)


def read(model_artifact: str | None) -> dict[str, Any] | None:
    """The model-meta summary of a Completed job whose model is `model_artifact`, or None (see module doc)."""
    uri = output_archive_uri(model_artifact or "")
    if uri is None:
        return None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        response = aws.client("s3").get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_ARCHIVE_BYTES}")
    except Exception as error:
        if aws.error_code(error) in NOT_THERE:
            logger.info("no %s for %s: the record gets no model_meta", OUTPUT_ARCHIVE, model_artifact)
            return None
        raise
    body = response["Body"].read()
    if len(body) > MAX_ARCHIVE_BYTES:
        logger.warning("%s is over %d bytes: not read", uri, MAX_ARCHIVE_BYTES)
        return None
    meta = read_meta_from_archive(body)
    if meta is None:
        logger.info("%s holds no %s: the record gets no model_meta", uri, META_FILE)
        return None
    return summary(meta)
