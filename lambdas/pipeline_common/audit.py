"""The audit record: one DynamoDB item per training job, written by start-training and record-status.

Key `job_name`; GSIs `by-commit` (commit_id, created_at) and `by-status` (status, updated_at), so those four
attributes are always non-empty strings when present (times are ISO-8601 UTC, millisecond precision).

Events arrive at least once and out of order, so every status write is conditional on `status_rank`, a
number that only grows:

    0  InProgress, written by start-training (no state-change event applied yet)
    1  InProgress (event)      2  Stopping      3  Completed / Failed / Stopped (terminal)

A *transition* (rank grows, or the record is new) updates the record and is the only thing that sends an
email. A newer event with the same status (a SecondaryStatus change) refreshes the record quietly. A
duplicate, or an older status after a newer one, changes nothing. A terminal status is never overwritten
by another status.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline_common import aws

# The training job statuses SageMaker reports (TrainingJobStatus), in the order a job goes through them.
STATUS_RANK: dict[str, int] = {"InProgress": 1, "Stopping": 2, "Completed": 3, "Failed": 3, "Stopped": 3}
STATUSES = tuple(STATUS_RANK)
CREATED_RANK = 0
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
RUNNING_STATUSES = frozenset(STATUSES) - TERMINAL_STATUSES

TRANSITION = "transition"
REFRESHED = "refreshed"
IGNORED = "ignored"

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"


# -- time ------------------------------------------------------------------------------------------------
def iso(moment: datetime) -> str:
    """One sortable format for every time in the record: 2026-11-22T10:00:00.000+00:00."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def epoch_millis(value: Any) -> int | None:
    """A time as EventBridge gives it, as epoch milliseconds: a number, or a string of digits as in AWS's
    published sample ("1583831889050"), or an ISO-8601 string; None when it is none of them."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        return int(value) if math.isfinite(float(value)) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(float(text)) if text.replace(".", "", 1).isdigit() else None
        except ValueError:
            return None
    return None


def iso_from_millis(value: Any) -> str | None:
    """EventBridge carries times as epoch milliseconds (numbers or digit strings); boto3 as datetimes."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return iso(value)
    millis = epoch_millis(value)
    if millis is not None:
        return iso(datetime.fromtimestamp(millis / 1000, tz=UTC))
    if isinstance(value, str):
        try:
            return iso(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


# -- DynamoDB attribute values (no boto3.dynamodb import: it is not needed for these few shapes) --------
def to_attribute(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store the number {value}")
        return {"N": repr(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attribute(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute(v) for v in value]}
    if isinstance(value, set | frozenset) and value and all(isinstance(v, str) for v in value):
        return {"SS": sorted(value)}
    raise TypeError(f"cannot store {type(value).__name__} in the audit record")


def from_attribute(attribute: Mapping[str, Any]) -> Any:
    ((kind, value),) = attribute.items()
    if kind == "S":
        return value
    if kind == "N":
        number = Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attribute(v) for k, v in value.items()}
    if kind == "L":
        return [from_attribute(v) for v in value]
    if kind == "SS":
        return sorted(value)  # a string set, as a list (JSON has no sets)
    return value


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: from_attribute(v) for k, v in item.items()}


def clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unknown values (None, '', empty maps): a record holds what is known, and GSI keys must be non-empty."""
    return {k: v for k, v in fields.items() if v is not None and v != "" and v != {}}


# -- writes ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusWrite:
    outcome: str  # TRANSITION, REFRESHED or IGNORED
    record: dict[str, Any]  # the record after the write ({} when IGNORED)

    @property
    def is_transition(self) -> bool:
        return self.outcome == TRANSITION


class _Expression:
    """Builds an UpdateExpression with placeholders for every name and value."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.sets: list[str] = []

    def name(self, attribute: str) -> str:
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attribute(value)
        return placeholder

    def set(self, attribute: str, value: Any) -> None:
        self.sets.append(f"{self.name(attribute)} = {self.value(value)}")

    def set_if_missing(self, attribute: str, value: Any) -> None:
        name = self.name(attribute)
        self.sets.append(f"{name} = if_not_exists({name}, {self.value(value)})")

    @property
    def update(self) -> str:
        return "SET " + ", ".join(self.sets)


def _is_condition_failure(error: BaseException) -> bool:
    return aws.error_code(error) == CONDITIONAL_CHECK_FAILED


def create_record(table: str, record: Mapping[str, Any]) -> bool:
    """Write the first record if there is none. If there is one (a retried invocation, or a state-change
    event that arrived first), only fill in the attributes it lacks. True if this call created it."""
    from botocore.exceptions import ClientError

    item = clean(record)
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item={k: to_attribute(v) for k, v in item.items()},
            ConditionExpression="attribute_not_exists(job_name)",
        )
        return True
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    fill_missing(table, item["job_name"], item)
    return False


def fill_missing(table: str, job_name: str, fields: Mapping[str, Any]) -> None:
    """Set the attributes the existing record does not have yet; never overwrite one."""
    expression = _Expression()
    for attribute, value in clean(fields).items():
        if attribute != "job_name":
            expression.set_if_missing(attribute, value)
    if not expression.sets:
        return
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"job_name": {"S": job_name}},
        UpdateExpression=expression.update,
        ExpressionAttributeNames=expression.names,
        ExpressionAttributeValues=expression.values,
        ConditionExpression="attribute_exists(job_name)",
    )


def apply_status(
    table: str,
    job_name: str,
    status: str,
    event_time_ms: int,
    fields: Mapping[str, Any],
    fields_if_missing: Mapping[str, Any] | None = None,
) -> StatusWrite:
    """Apply one state-change event to the record, conditionally (see the module docstring).

    `fields` are set from the event; `fields_if_missing` (what the job's tags say about the commit, the
    data version...) only fill gaps, since start-training's first record is the authority on them.
    """
    from botocore.exceptions import ClientError

    rank = STATUS_RANK[status]
    dynamodb = aws.client("dynamodb")

    def update(
        condition: str, condition_names: Mapping[str, str], extra_values: Mapping[str, Any]
    ) -> dict[str, Any]:
        expression = _Expression()
        for attribute, value in clean(fields).items():
            if attribute not in ("job_name", "status", "status_rank", "last_event_time", "updated_at"):
                expression.set(attribute, value)
        for attribute, value in clean(fields_if_missing or {}).items():
            if attribute not in fields:
                expression.set_if_missing(attribute, value)
        expression.set("status", status)
        expression.set("status_rank", rank)
        expression.set("last_event_time", event_time_ms)
        expression.set("updated_at", now_iso())
        # DynamoDB rejects unused placeholders, so each condition brings exactly the names it uses.
        names = {**expression.names, **condition_names}
        values = {**expression.values, **{k: to_attribute(v) for k, v in extra_values.items()}}
        response = dynamodb.update_item(
            TableName=table,
            Key={"job_name": {"S": job_name}},
            UpdateExpression=expression.update,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return from_item(response.get("Attributes", {}))

    try:
        record = update(
            "attribute_not_exists(#job) OR attribute_not_exists(#rank) OR #rank < :rank",
            {"#job": "job_name", "#rank": "status_rank"},
            {":rank": rank},
        )
        return StatusWrite(TRANSITION, record)
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    try:
        # Same status, newer event (e.g. SecondaryStatus Downloading -> Training): refresh, no email.
        record = update(
            "#st = :status AND #rank = :rank AND (attribute_not_exists(#t) OR #t < :time)",
            {"#st": "status", "#rank": "status_rank", "#t": "last_event_time"},
            {":status": status, ":rank": rank, ":time": event_time_ms},
        )
        return StatusWrite(REFRESHED, record)
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    return StatusWrite(IGNORED, {})


# -- notifications: at least once per transition, under any single fault -----------------------------------
# The email for a status is sent by whoever holds the record's notification lease for that status rank:
#   lease: notify_lease_rank, notify_lease_until (epoch seconds), notify_lease_token (the invocation's id)
#   done:  notified_rank, set only after SNS accepted the message
# A crash, a failed publish or a lost response never leaves a lease that blocks the email for good: the
# lease expires (LEASE_SECONDS, longer than a whole invocation: function timeout plus client timeouts), a
# retry of the same invocation recognises its own token and carries on at once, and a lease for an older
# status gives way to a newer one. The only duplicate is the one AWS forces: SNS accepted the message but
# the invocation died before recording it.
LEASE_SECONDS = 120
NOTIFY_NAMES = {
    "#st": "status",
    "#rank": "status_rank",
    "#nr": "notified_rank",
    "#lr": "notify_lease_rank",
    "#lu": "notify_lease_until",
    "#lt": "notify_lease_token",
}


class LeaseHeld(Exception):
    """Another invocation is sending this email right now: retry later (after its lease expires)."""


def take_notification_lease(table: str, job_name: str, status: str, token: str) -> bool:
    """True: this invocation must send the email for `status` now. False: it is sent, or the record has
    moved past `status` (no stale email). Raises LeaseHeld while another invocation's lease runs."""
    from botocore.exceptions import ClientError

    rank = STATUS_RANK[status]
    now = time.time()
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key={"job_name": {"S": job_name}},
            UpdateExpression="SET #lr = :rank, #lu = :until, #lt = :token",
            ConditionExpression=(
                "#st = :status AND #rank = :rank AND (attribute_not_exists(#nr) OR #nr < :rank) AND "
                "(attribute_not_exists(#lu) OR #lu < :now OR #lr < :rank OR #lt = :token)"
            ),
            ExpressionAttributeNames=NOTIFY_NAMES,
            ExpressionAttributeValues={
                ":rank": {"N": str(rank)},
                ":status": {"S": status},
                ":until": {"N": str(int(now + LEASE_SECONDS))},
                ":now": {"N": str(int(now))},
                ":token": {"S": token},
            },
        )
        return True
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    record = get_record(table, job_name) or {}
    if record.get("status") != status or record.get("notified_rank", -1) >= rank:
        return False
    if record.get("notify_lease_token") == token and record.get("notify_lease_rank") == rank:
        return True  # our own write, applied while we saw an error
    raise LeaseHeld(
        f"the {status} email of {job_name} is being sent by another invocation "
        f"(lease until {record.get('notify_lease_until')})"
    )


def mark_notified(table: str, job_name: str, status: str) -> None:
    """The email for `status` was accepted by SNS: record it and drop the lease."""
    from botocore.exceptions import ClientError

    rank = STATUS_RANK[status]
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key={"job_name": {"S": job_name}},
            UpdateExpression="SET #nr = :rank REMOVE #lr, #lu, #lt",
            ConditionExpression="attribute_not_exists(#nr) OR #nr < :rank",
            ExpressionAttributeNames={
                "#nr": "notified_rank",
                "#lr": "notify_lease_rank",
                "#lu": "notify_lease_until",
                "#lt": "notify_lease_token",
            },
            ExpressionAttributeValues={":rank": {"N": str(rank)}},
        )
    except ClientError as error:
        if not _is_condition_failure(error):  # already recorded (a retry): nothing to do
            raise


def get_record(table: str, job_name: str) -> dict[str, Any] | None:
    response = aws.client("dynamodb").get_item(
        TableName=table, Key={"job_name": {"S": job_name}}, ConsistentRead=True
    )
    item = response.get("Item")
    return from_item(item) if item else None


# -- after training: the gate, the package and every approval decision ------------------------------------
# They go on the training job's own item: a run's whole lineage (commit, image, data, job, metrics, gate,
# package, decisions) is one GetItem, and `runs` listings stay queries on the same two indexes. Each write
# is conditional, so a retried stage or a redelivered event changes nothing it already changed.
GATE_FIELDS = ("gate", "gate_status", "evaluation_uri", "evaluated_at")
MAX_DECISIONS = 100  # decisions kept inline (a DynamoDB item is at most 400 KB); each is a few hundred bytes


def _update(
    table: str,
    job_name: str,
    expression: _Expression,
    condition: str,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    add: str = "",
) -> dict[str, Any]:
    """One conditional UpdateItem of the record (`add`: an ADD clause after the SETs); the record after it."""
    response = aws.client("dynamodb").update_item(
        TableName=table,
        Key={"job_name": {"S": job_name}},
        UpdateExpression=expression.update + (f" ADD {add}" if add else ""),
        ConditionExpression=condition,
        ExpressionAttributeNames={**expression.names, "#job": "job_name", **(names or {})},
        ExpressionAttributeValues={
            **expression.values,
            **{k: to_attribute(v) for k, v in (values or {}).items()},
        },
        ReturnValues="ALL_NEW",
    )
    return from_item(response.get("Attributes", {}))


def record_gate(table: str, job_name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's decision, once: a second write (a retry) keeps the first. Returns the record after it."""
    expression = _Expression()
    for attribute, value in clean(fields).items():
        expression.set_if_missing(attribute, value)
    expression.set("updated_at", now_iso())
    return _update(table, job_name, expression, "attribute_exists(#job)")


def record_package(table: str, job_name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The registered package (ARN, version, group, initial approval status), once. The approval status is
    only set if no decision got there first (record-approval may see the package's event before this)."""
    expression = _Expression()
    for attribute, value in clean(fields).items():
        expression.set_if_missing(attribute, value)
    expression.set("updated_at", now_iso())
    return _update(table, job_name, expression, "attribute_exists(#job)")


@dataclass(frozen=True)
class Decision:
    """One approval decision on a package, from its state-change event and DescribeModelPackage."""

    decision_id: str  # package version, status and time of the change: the same for a redelivered event
    status: str  # Approved or Rejected
    decided_at: str  # ISO-8601 UTC
    decided_by: str  # the IAM identity (or Studio user) that made the change
    reason: str  # ApprovalDescription ('' when none was given)
    model_package_arn: str
    model_package_version: int
    current: bool = True  # False: a later change had already replaced it when it was read (no email)

    def as_item(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "status": self.status,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "model_package_arn": self.model_package_arn,
            "model_package_version": self.model_package_version,
            "superseded": not self.current,
        }


def record_decision(table: str, job_name: str, decision: Decision) -> dict[str, Any]:
    """Append the decision to the record's `approvals` (once per decision id), then make it the record's
    current approval status if it is newer than the one there. Returns the record after both."""
    from botocore.exceptions import ClientError

    appended = _Expression()
    appended.sets.append(
        f"{appended.name('approvals')} = list_append(if_not_exists({appended.name('approvals')}, "
        f"{appended.value([])}), {appended.value([decision.as_item()])})"
    )
    appended.set("updated_at", now_iso())
    record: dict[str, Any] = {}
    try:
        record = _update(
            table,
            job_name,
            appended,
            "attribute_exists(#job) AND (attribute_not_exists(#ids) OR NOT contains(#ids, :id)) AND "
            "(attribute_not_exists(#list) OR size(#list) < :max)",
            names={"#ids": "approval_decision_ids", "#list": "approvals"},
            values={":id": decision.decision_id, ":ids": {decision.decision_id}, ":max": MAX_DECISIONS},
            add="#ids :ids",
        )
    except ClientError as error:
        if not _is_condition_failure(error):
            raise  # already recorded (a redelivery or a retry), or the record is missing: checked below
    if not decision.current:
        return record or (get_record(table, job_name) or {})
    current = _Expression()
    for attribute, value in (
        ("approval_status", decision.status),
        ("approval_decided_at", decision.decided_at),
        ("approval_decided_by", decision.decided_by),
        ("approval_reason", decision.reason),
        ("approval_decision_id", decision.decision_id),
    ):
        current.set(attribute, value)
    try:
        return _update(
            table,
            job_name,
            current,
            "attribute_exists(#job) AND (attribute_not_exists(#at) OR #at < :at)",
            names={"#at": "approval_decided_at"},
            values={":at": decision.decided_at},
        )
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    return get_record(table, job_name) or {}


# -- one email per event, at least once (the same lease as above, for emails named by a key) ---------------
# `emails_sent` (a string set) holds the keys of the emails SNS accepted; `email_lease:<key>` the lease of an
# invocation sending one. `require` makes the email depend on the record still saying what it says now
# (e.g. the decision it announces is still the current one): no stale email.
EMAILS_SENT = "emails_sent"


def _lease_attribute(key: str) -> str:
    return f"email_lease:{key}"


def take_email_lease(
    table: str, job_name: str, key: str, token: str, require: tuple[str, Any] | None = None
) -> bool:
    """True: this invocation must send email `key` now. False: it was sent, or `require` no longer holds.
    Raises LeaseHeld while another invocation's lease on it runs."""
    from botocore.exceptions import ClientError

    now = time.time()
    condition = (
        "attribute_exists(#job) AND (attribute_not_exists(#sent) OR NOT contains(#sent, :key)) AND "
        "(attribute_not_exists(#lease) OR #lease.#until < :now OR #lease.#token = :token)"
    )
    names = {"#job": "job_name", "#sent": EMAILS_SENT, "#lease": _lease_attribute(key)}
    names.update({"#until": "until", "#token": "token"})
    values = {
        ":key": {"S": key},
        ":now": {"N": str(int(now))},
        ":token": {"S": token},
        ":leased": {"M": {"until": {"N": str(int(now + LEASE_SECONDS))}, "token": {"S": token}}},
    }
    if require is not None:
        condition += " AND #req = :req"
        names["#req"] = require[0]
        values[":req"] = to_attribute(require[1])
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key={"job_name": {"S": job_name}},
            UpdateExpression="SET #lease = :leased",
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return True
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    record = get_record(table, job_name) or {}
    if key in (record.get(EMAILS_SENT) or ()) or (
        require is not None and record.get(require[0]) != require[1]
    ):
        return False
    lease = record.get(_lease_attribute(key)) or {}
    if lease.get("token") == token:
        return True  # our own write, applied while we saw an error
    if not record:
        raise LookupError(f"no audit record for {job_name}: nothing to send an email about")
    raise LeaseHeld(
        f"the {key} email of {job_name} is being sent by another invocation (lease until {lease.get('until')})"
    )


def mark_emailed(table: str, job_name: str, key: str) -> None:
    """SNS accepted email `key`: record it and drop its lease (idempotent)."""
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"job_name": {"S": job_name}},
        UpdateExpression="ADD #sent :keys REMOVE #lease",
        ConditionExpression="attribute_exists(#job)",
        ExpressionAttributeNames={"#job": "job_name", "#sent": EMAILS_SENT, "#lease": _lease_attribute(key)},
        ExpressionAttributeValues={":keys": {"SS": [key]}},
    )
