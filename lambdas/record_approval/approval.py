"""What record-approval does with one SageMaker Model Package State Change event, as plain functions.

An approval decision is a package of this project's group becoming Approved or Rejected: in SageMaker
Studio, with the AWS CLI, with `mlpipe-runs approve|reject`, or at registration (`auto_approve`). The
event says which package, which status and when; it does not say who or why. DescribeModelPackage does
(LastModifiedBy, or CreatedBy for a package created Approved; ApprovalDescription), but it describes the
package as it is *now*, which may already be a later decision.

So each event is matched with the description: the same status and the same time make the description
this decision's (who, why); a description newer than the event means the decision was replaced before
it was read: it is recorded as superseded, without an identity and without an email (the newer
decision's own event brings those); a description older than the event is a stale read: raised, retried.

What it guarantees, with events delivered at least once and in any order, and a crash or a lost response
possible between any two calls:
- every decision is recorded once on its training job's audit record (`approvals`, keyed by package
  version, status and time), and the record's current approval status is the newest decision's;
- the email of each current decision is sent at least once (the record's email lease; retries and a DLQ
  redrive finish an interrupted one), twice only when SNS accepted it and the invocation died before
  recording that;
- no email for a decision that a newer one has replaced by the time it is sent (the lease requires the
  record's current decision to be this one).
A malformed event raises BadInputError (retried, then dead-lettered) and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline_common import audit, aws, model_package, notify
from pipeline_common.errors import BadInputError
from pipeline_common.settings import RecordApprovalSettings

logger = logging.getLogger(__name__)

DETAIL_TYPE = "SageMaker Model Package State Change"
SOURCE = "aws.sagemaker"
SUPERSEDED_BY = "unknown: the package changed again before this decision was read"
AUTO_APPROVED = "approved when it was registered (auto_approve)"


@dataclass(frozen=True)
class PackageChange:
    event_id: str
    package_arn: str
    group: str
    version: int
    status: str
    changed_at: datetime  # the event's LastModifiedTime (or CreationTime), whole seconds

    @property
    def decision_id(self) -> str:
        return f"v{self.version}:{self.status}:{self.changed_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _time(value: Any) -> datetime | None:
    """The event's times: ISO-8601 strings in AWS's sample ("2021-02-24T17:00:14Z"); epoch millis accepted."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        millis = audit.epoch_millis(text)
        try:
            moment = (
                datetime.fromtimestamp(millis / 1000, tz=UTC)
                if millis is not None
                else datetime.fromisoformat(text.replace("Z", "+00:00"))
            )
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value / 1000, tz=UTC)
    else:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def parse_event(event: Any) -> PackageChange:
    """Validate the EventBridge event; raise BadInputError saying what is wrong."""
    if not isinstance(event, Mapping):
        raise BadInputError(f"expected an EventBridge event object, got {type(event).__name__}")
    if event.get("detail-type") != DETAIL_TYPE or event.get("source") != SOURCE:
        raise BadInputError(
            f"expected source {SOURCE!r} and detail-type {DETAIL_TYPE!r}, got "
            f"{event.get('source')!r} / {event.get('detail-type')!r}"
        )
    event_id, detail = event.get("id"), event.get("detail")
    if not isinstance(event_id, str) or not event_id:
        raise BadInputError("EventBridge event has no id")
    if not isinstance(detail, Mapping):
        raise BadInputError(f"event {event_id} has no detail object")
    arn = detail.get("ModelPackageArn")
    parsed = model_package.parse_package_arn(arn) if isinstance(arn, str) else None
    if parsed is None:
        raise BadInputError(
            f"event {event_id}: detail.ModelPackageArn {arn!r} is not a versioned package's ARN"
        )
    status = detail.get("ModelApprovalStatus")
    if status not in model_package.APPROVAL_STATUSES:
        raise BadInputError(
            f"event {event_id}: unknown ModelApprovalStatus {status!r} "
            f"(known: {', '.join(model_package.APPROVAL_STATUSES)})"
        )
    changed = _time(detail.get("LastModifiedTime")) or _time(detail.get("CreationTime"))
    if changed is None:
        raise BadInputError(f"event {event_id}: neither detail.LastModifiedTime nor CreationTime is a time")
    return PackageChange(
        event_id=event_id,
        package_arn=arn,
        group=str(detail.get("ModelPackageGroupName") or parsed[0]),
        version=int(detail.get("ModelPackageVersion") or parsed[1]),
        status=str(status),
        changed_at=_seconds(changed),
    )


def decision_of(change: PackageChange, package: Mapping[str, Any]) -> audit.Decision:
    """This event's decision, with who and why when the description is still this decision's."""
    described_at = _time(package.get("LastModifiedTime")) or _time(package.get("CreationTime"))
    if described_at is None:
        raise RuntimeError(f"DescribeModelPackage of {change.package_arn} has no time")
    same_change = (
        _seconds(described_at) == change.changed_at and package.get("ModelApprovalStatus") == change.status
    )
    if _seconds(described_at) < change.changed_at:
        # The service has not caught up with its own event yet: retry later. (A different status within
        # the same second is another change made right after this one: this one is superseded.)
        raise RuntimeError(
            f"DescribeModelPackage says {change.package_arn} is {package.get('ModelApprovalStatus')} since "
            f"{described_at.isoformat()}, the event says {change.status} at {change.changed_at.isoformat()}"
        )
    if not same_change:
        return audit.Decision(
            decision_id=change.decision_id,
            status=change.status,
            decided_at=audit.iso(change.changed_at),
            decided_by=SUPERSEDED_BY,
            reason="",
            model_package_arn=change.package_arn,
            model_package_version=change.version,
            current=False,
        )
    reason = str(package.get("ApprovalDescription") or "")
    if not reason and change.status == model_package.APPROVED and not package.get("LastModifiedBy"):
        reason = AUTO_APPROVED  # created Approved and never changed since: the pipeline approved it
    return audit.Decision(
        decision_id=change.decision_id,
        status=change.status,
        decided_at=audit.iso(described_at),
        decided_by=model_package.decided_by(package),
        reason=reason,
        model_package_arn=change.package_arn,
        model_package_version=change.version,
    )


def training_job_of(package: Mapping[str, Any]) -> str | None:
    properties = package.get("CustomerMetadataProperties") or {}
    return properties.get(model_package.META_TRAINING_JOB) or model_package.job_of_description(
        package.get("ModelPackageDescription")
    )


def record_and_notify(
    change: PackageChange, settings: RecordApprovalSettings, invocation_id: str
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "model_package_arn": change.package_arn,
        "status": change.status,
        "emailed": False,
    }
    if change.group != settings.model_package_group:
        logger.info("ignoring %s: not in group %s", change.package_arn, settings.model_package_group)
        return {**result, "outcome": "not-ours"}
    if change.status not in model_package.DECISIONS:
        return {**result, "outcome": "not-a-decision"}
    package = aws.client("sagemaker").describe_model_package(ModelPackageName=change.package_arn)
    job_name = training_job_of(package)
    table = settings.audit_table_name
    record = audit.get_record(table, job_name) if job_name else None
    if record is None:
        # A package someone registered by hand in this group, or one whose record was deleted: nothing to
        # attach the decision to. Logged, not retried (a retry would not make the record appear).
        logger.error(
            "no audit record for %s (training job %s): decision not recorded", change.package_arn, job_name
        )
        return {**result, "outcome": "no-record", "job_name": job_name}
    decision = decision_of(change, package)
    audit.record_decision(table, str(job_name), decision)
    result.update(job_name=job_name, outcome="recorded" if decision.current else "superseded")
    if not decision.current:
        return result
    key = f"decision:{decision.decision_id}"
    if not audit.take_email_lease(
        table, str(job_name), key, invocation_id, require=("approval_decision_id", decision.decision_id)
    ):
        return result
    record = audit.get_record(table, str(job_name)) or record
    email = notify.decision_email(
        settings.project_name, settings.env_name, settings.pipeline_name, record, decision.as_item()
    )
    result["message_id"] = notify.send(settings.topic_arn, email)
    audit.mark_emailed(table, str(job_name), key)
    result["emailed"] = True
    return result
