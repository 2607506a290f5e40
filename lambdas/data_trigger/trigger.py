"""What data-trigger does with one SQS batch of S3 Object Created events, as plain functions.

The valid new data objects of a batch start ONE pipeline execution, with TRIGGER and DATA_CHANGE pipeline
variables. What it guarantees, with messages delivered at least once, batches in any composition, and a
crash or a lost response possible between any two calls:

- **Nothing lost.** A message is acknowledged only when its object is covered by a started execution (or
  is not training data). Any failure fails exactly the messages it concerns (partial batch response), and
  SQS redelivers them, then dead-letters them after maxReceiveCount.
- **One bad message fails alone.** Any exception while reading one record (bad JSON, `"size": 1e999`,
  JSON nested too deeply) fails that record only.
- **One execution per object version.** Each object version (bucket, key, version id) is claimed in the
  dedup table before the start and marked started after it, with a TTL. A later duplicate of a started
  version is acknowledged without a new execution. A claim left by a crashed invocation expires before SQS
  redelivers the message (claim < visibility timeout), so the redelivery takes it over, keeping the
  crashed start's client request token: if that start was applied, repeating it returns the same
  execution (CodePipeline deduplicates on the token).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline_common import aws
from pipeline_common.data_version import CHANNELS, is_folder_marker
from pipeline_common.errors import BadInputError
from pipeline_common.settings import DataTriggerSettings

logger = logging.getLogger(__name__)

TRIGGER = "data-upload"
MAX_VARIABLE_VALUE = 1000
MAX_TOKEN = 128
CLAIM_SECONDS = 300  # under the queue's visibility timeout (6 x 60 s + 60 s): a redelivery finds it expired
STARTED_SECONDS = 7 * 24 * 3600  # how long a started version is remembered (the dedup window)
KEY_PREFIX = "data-trigger#"
PARALLEL_CALLS = 8


@dataclass(frozen=True)
class NewObject:
    message_id: str
    bucket: str
    key: str
    version_id: str
    size: int

    @property
    def dedup_key(self) -> str:
        return f"{KEY_PREFIX}s3://{self.bucket}/{self.key}#{self.version_id}"


@dataclass
class BatchResult:
    started: bool = False
    execution_id: str | None = None
    client_request_token: str | None = None
    objects: list[NewObject] = field(default_factory=list)  # started by this batch
    duplicates: list[str] = field(default_factory=list)  # message ids of versions started before
    ignored: list[str] = field(default_factory=list)  # message ids
    failed: list[str] = field(default_factory=list)  # message ids

    def response(self) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failed]}


def parse_object_created(message_id: str, body: Any) -> NewObject:
    """An EventBridge `Object Created` event in an SQS body; BadInputError if it is anything else."""
    try:
        event = json.loads(body) if isinstance(body, str) else None
    except (ValueError, RecursionError) as error:
        raise BadInputError(f"message {message_id}: body is not readable JSON ({str(error)[:200]})") from None
    if not isinstance(event, Mapping):
        raise BadInputError(f"message {message_id}: body is not a JSON object")
    if event.get("source") != "aws.s3" or event.get("detail-type") != "Object Created":
        raise BadInputError(
            f"message {message_id}: not an S3 Object Created event "
            f"(source {event.get('source')!r}, detail-type {event.get('detail-type')!r})"
        )
    detail = event.get("detail")
    bucket = detail.get("bucket", {}) if isinstance(detail, Mapping) else {}
    obj = detail.get("object", {}) if isinstance(detail, Mapping) else {}
    if (
        not isinstance(bucket, Mapping)
        or not isinstance(obj, Mapping)
        or not bucket.get("name")
        or not obj.get("key")
    ):
        raise BadInputError(
            f"message {message_id}: Object Created event without detail.bucket.name/object.key"
        )
    size = obj.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int | float) or not 0 <= size < 2**63:
        raise BadInputError(f"message {message_id}: object size {str(size)[:40]!r} is not a byte count")
    # Unversioned buckets have no version id; the sequencer orders that key's events, so it names the write.
    version = obj.get("version-id") or obj.get("sequencer") or "null"
    return NewObject(message_id, str(bucket["name"]), str(obj["key"]), str(version), int(size))


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


def request_token(keys: Iterable[str]) -> str:
    """Deterministic per set of object versions: repeating a start for them returns the same execution."""
    digest = hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()
    return f"data-{digest}"[:MAX_TOKEN]


# -- the dedup table -------------------------------------------------------------------------------------------
CLAIMED, STARTED = "claimed", "started"


@dataclass(frozen=True)
class Claim:
    state: str  # CLAIMED: start it; STARTED: a duplicate; BUSY: another invocation holds it, retry later
    token: str = ""  # the request token its start uses


BUSY = "busy"


def claim(table: str, obj: NewObject, token: str) -> Claim:
    """Claim one object version for a start. A claim left by a crashed invocation (expired) is taken over
    with ITS token: if that invocation's start was applied, repeating it returns the same execution."""
    from botocore.exceptions import ClientError

    dynamodb = aws.client("dynamodb")
    now = int(time.time())
    try:
        attributes = dynamodb.update_item(
            TableName=table,
            Key={"id": {"S": obj.dedup_key}},
            UpdateExpression="SET #state = :claimed, #exp = :until, #token = if_not_exists(#token, :token)",
            ConditionExpression=(
                "attribute_not_exists(id) OR (#state = :claimed AND (#exp < :now OR #token = :token)) "
                "OR (#state = :started AND #exp < :now)"
            ),
            ExpressionAttributeNames={"#exp": "expiration", "#state": "state", "#token": "claim_token"},
            ExpressionAttributeValues={
                ":now": {"N": str(now)},
                ":until": {"N": str(now + CLAIM_SECONDS)},
                ":claimed": {"S": CLAIMED},
                ":started": {"S": STARTED},
                ":token": {"S": token},
            },
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return Claim(CLAIMED, attributes["claim_token"]["S"])
    except ClientError as error:
        if aws.error_code(error) != "ConditionalCheckFailedException":
            raise
    item = dynamodb.get_item(TableName=table, Key={"id": {"S": obj.dedup_key}}, ConsistentRead=True).get(
        "Item", {}
    )
    return Claim(STARTED) if item.get("state", {}).get("S") == STARTED else Claim(BUSY)


def mark_started(table: str, obj: NewObject, execution_id: str) -> None:
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"id": {"S": obj.dedup_key}},
        UpdateExpression="SET #state = :started, execution_id = :execution, #exp = :expiration REMOVE claim_token",
        ExpressionAttributeNames={"#state": "state", "#exp": "expiration"},
        ExpressionAttributeValues={
            ":started": {"S": STARTED},
            ":execution": {"S": execution_id},
            ":expiration": {"N": str(int(time.time()) + STARTED_SECONDS)},
        },
    )


def _claim_or_busy(settings: DataTriggerSettings, obj: NewObject, token: str) -> Claim:
    try:
        return claim(settings.dedup_table_name, obj, token)
    except Exception as error:
        logger.warning("could not claim %s (%s); its messages will be retried", obj.dedup_key, error)
        return Claim(BUSY)


def _in_parallel(call: Callable[[NewObject], Any], objects: Iterable[NewObject]) -> list[Any]:
    """One DynamoDB call per object version, a few at a time (clients are thread-safe): a batch of 100 takes
    ~1/8 of the sequential time. Raises the first error, after all calls ended."""
    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
        return list(pool.map(call, objects))


# -- one batch -----------------------------------------------------------------------------------------------------
def handle_batch(records: Iterable[tuple[str, Any]], settings: DataTriggerSettings) -> BatchResult:
    """`records` are (message id, body) pairs."""
    result = BatchResult()
    candidates: list[NewObject] = []
    for message_id, body in records:
        try:
            obj = parse_object_created(message_id, body)
            reason = ignore_reason(obj, settings)
        except Exception as error:  # one unreadable message must not fail the others
            logger.error("unreadable message, reported as a batch item failure: %s", str(error)[:500])
            result.failed.append(message_id)
            continue
        if reason:
            logger.info("ignoring s3://%s/%s: %s", obj.bucket, obj.key, reason)
            result.ignored.append(message_id)
            continue
        candidates.append(obj)
    if not candidates:
        return result
    # Several messages may carry the same version (duplicates within a batch): claim each version once.
    versions = {obj.dedup_key: obj for obj in candidates}
    claims = _in_parallel(
        lambda obj: _claim_or_busy(settings, obj, request_token(versions)), versions.values()
    )
    groups: dict[str, list[NewObject]] = {}  # request token -> the versions its start covers
    for key, taken in zip(versions, claims, strict=True):
        messages = [o.message_id for o in candidates if o.dedup_key == key]
        if taken.state == CLAIMED:
            groups.setdefault(taken.token, []).append(versions[key])
        elif taken.state == STARTED:
            result.duplicates.extend(messages)
        else:
            result.failed.extend(messages)
    for group_token, group in groups.items():
        _start(settings, group_token, group, candidates, result)
    return result


def _start(
    settings: DataTriggerSettings,
    token: str,
    group: list[NewObject],
    candidates: list[NewObject],
    result: BatchResult,
) -> None:
    """One StartPipelineExecution for the claimed versions of one token, then mark them started."""
    keys = {obj.dedup_key for obj in group}
    covered = [obj for obj in candidates if obj.dedup_key in keys]
    summary = data_change_summary(group)
    result.client_request_token = token
    try:
        response = aws.client("codepipeline").start_pipeline_execution(
            name=settings.pipeline_name,
            variables=[{"name": "TRIGGER", "value": TRIGGER}, {"name": "DATA_CHANGE", "value": summary}],
            clientRequestToken=token,
        )
        execution_id = str(response.get("pipelineExecutionId", ""))
        _in_parallel(lambda obj: mark_started(settings.dedup_table_name, obj, execution_id), group)
    except Exception:
        logger.exception(
            "could not start pipeline %s (or record the start); %d messages will be retried",
            settings.pipeline_name,
            len(covered),
        )
        result.failed.extend(obj.message_id for obj in covered)
        return
    result.started = True
    result.execution_id = execution_id
    result.objects.extend(covered)
    logger.info(
        "started pipeline %s execution %s for %s",
        settings.pipeline_name,
        execution_id,
        summary,
        extra={"client_request_token": token, "objects": len(group)},
    )
