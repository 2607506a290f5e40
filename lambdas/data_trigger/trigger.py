"""What data-trigger does with one SQS batch of S3 Object Created events, as plain functions.

Every valid new data object in the batch is coalesced into ONE StartPipelineExecution with TRIGGER and
DATA_CHANGE pipeline variables and a client request token derived from the batch's message ids (a retried
identical batch does not start a second execution). Partial batch failures: a malformed message fails
alone (and ends in the DLQ after maxReceiveCount); if the start fails, every valid message of the batch
fails, so none is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline_common import aws
from pipeline_common.data_version import is_folder_marker
from pipeline_common.errors import BadInputError
from pipeline_common.settings import DataTriggerSettings

logger = logging.getLogger(__name__)

TRIGGER = "data-upload"
MAX_VARIABLE_VALUE = 1000
MAX_TOKEN = 128
CHANNELS = ("train", "validation")


@dataclass(frozen=True)
class NewObject:
    message_id: str
    bucket: str
    key: str
    version_id: str
    size: int


@dataclass
class BatchResult:
    started: bool = False
    execution_id: str | None = None
    client_request_token: str | None = None
    objects: list[NewObject] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # message ids
    failed: list[str] = field(default_factory=list)  # message ids

    def response(self) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failed]}


def parse_object_created(message_id: str, body: Any) -> NewObject:
    """An EventBridge `Object Created` event in an SQS body; BadInputError if it is anything else."""
    try:
        event = json.loads(body) if isinstance(body, str) else None
    except json.JSONDecodeError as error:
        raise BadInputError(f"message {message_id}: body is not JSON ({error})") from None
    if not isinstance(event, Mapping):
        raise BadInputError(f"message {message_id}: body is not a JSON object")
    if event.get("source") != "aws.s3" or event.get("detail-type") != "Object Created":
        raise BadInputError(
            f"message {message_id}: not an S3 Object Created event "
            f"(source {event.get('source')!r}, detail-type {event.get('detail-type')!r})"
        )
    detail = event.get("detail")
    bucket = (detail or {}).get("bucket", {}) if isinstance(detail, Mapping) else {}
    obj = (detail or {}).get("object", {}) if isinstance(detail, Mapping) else {}
    if (
        not isinstance(bucket, Mapping)
        or not isinstance(obj, Mapping)
        or not bucket.get("name")
        or not obj.get("key")
    ):
        raise BadInputError(
            f"message {message_id}: Object Created event without detail.bucket.name/object.key"
        )
    try:
        size = int(obj.get("size", 0) or 0)
    except (TypeError, ValueError):
        raise BadInputError(
            f"message {message_id}: object size {obj.get('size')!r} is not a number"
        ) from None
    return NewObject(
        message_id=message_id,
        bucket=str(bucket["name"]),
        key=str(obj["key"]),
        version_id=str(obj.get("version-id") or "null"),
        size=size,
    )


def ignore_reason(obj: NewObject, settings: DataTriggerSettings) -> str | None:
    if obj.bucket != settings.data_bucket:
        return f"bucket {obj.bucket} is not the data bucket {settings.data_bucket}"
    channel_prefixes = tuple(f"{settings.data_prefix}{channel}/" for channel in CHANNELS)
    if not obj.key.startswith(channel_prefixes):
        return f"outside the data prefixes {', '.join(channel_prefixes)}"
    if is_folder_marker(obj.key, obj.size):
        return "a zero-byte folder marker"
    return None


def data_change_summary(objects: Iterable[NewObject]) -> str:
    """`<n> objects: key@version, ...`, at most 1000 characters (a pipeline variable's limit)."""
    unique = sorted({f"{obj.key}@{obj.version_id}" for obj in objects})
    text = f"{len(unique)} object{'s' if len(unique) != 1 else ''}: " + ", ".join(unique)
    if len(text) > MAX_VARIABLE_VALUE:
        text = text[: MAX_VARIABLE_VALUE - 3] + "..."
    return text


def request_token(message_ids: Iterable[str]) -> str:
    """Deterministic per batch: the same messages retried give the same token (CodePipeline deduplicates)."""
    digest = hashlib.sha256("\n".join(sorted(message_ids)).encode()).hexdigest()
    return f"data-{digest}"[:MAX_TOKEN]


def handle_batch(records: Iterable[tuple[str, Any]], settings: DataTriggerSettings) -> BatchResult:
    """`records` are (message id, body) pairs."""
    result = BatchResult()
    for message_id, body in records:
        try:
            obj = parse_object_created(message_id, body)
        except BadInputError as error:
            logger.error("malformed message, reported as a batch item failure: %s", error)
            result.failed.append(message_id)
            continue
        reason = ignore_reason(obj, settings)
        if reason:
            logger.info("ignoring s3://%s/%s: %s", obj.bucket, obj.key, reason)
            result.ignored.append(message_id)
            continue
        result.objects.append(obj)
    if not result.objects:
        return result
    token = request_token(obj.message_id for obj in result.objects)
    summary = data_change_summary(result.objects)
    result.client_request_token = token
    try:
        response = aws.client("codepipeline").start_pipeline_execution(
            name=settings.pipeline_name,
            variables=[
                {"name": "TRIGGER", "value": TRIGGER},
                {"name": "DATA_CHANGE", "value": summary},
            ],
            clientRequestToken=token,
        )
    except Exception:
        logger.exception(
            "could not start pipeline %s; all %d data messages of this batch will be retried",
            settings.pipeline_name,
            len(result.objects),
        )
        result.failed.extend(obj.message_id for obj in result.objects)
        return result
    result.started = True
    result.execution_id = str(response.get("pipelineExecutionId", ""))
    logger.info(
        "started pipeline %s execution %s for %s",
        settings.pipeline_name,
        result.execution_id,
        summary,
        extra={"client_request_token": token, "objects": len(result.objects)},
    )
    return result
