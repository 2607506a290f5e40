"""What record-status does with one SageMaker Training Job State Change event, as plain functions.

Parse and validate the event (a malformed one raises BadInputError before anything is written); on a
terminal status, read what the event does not carry from DescribeTrainingJob (final metrics, billable and
training time, spot, the failure reason, the model); apply it all to the audit record with a conditional
update; and send the email for a real transition under a lease (see `pipeline_common.audit`).

What it guarantees, with events delivered at least once and in any order, and a crash or a lost response
possible between any two calls:
- the record's status only moves forward (InProgress < Stopping < a terminal status), whatever the order;
- the email of each transition is sent at least once, after retries and a DLQ redrive; twice only when SNS
  accepted it and the invocation died before recording that (the ambiguity AWS itself leaves);
- no email for a status the record has already moved past.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline_common import audit, aws, notify, training_job
from pipeline_common.errors import BadInputError
from pipeline_common.settings import RecordStatusSettings

logger = logging.getLogger(__name__)

DETAIL_TYPE = "SageMaker Training Job State Change"
SOURCE = "aws.sagemaker"

# Job tag → record attribute: what a record rebuilt from an early event knows about its origin.
TAG_FIELDS = {
    training_job.TAG_COMMIT: "commit_id",
    training_job.TAG_REPO: "repo",
    training_job.TAG_BRANCH: "branch",
    training_job.TAG_EXECUTION: "pipeline_execution_id",
    training_job.TAG_TRIGGER: "trigger",
    training_job.TAG_DATA_VERSION: "data_version",
    training_job.TAG_IMAGE_DIGEST: "image_digest",
}


@dataclass(frozen=True)
class StateChange:
    event_id: str
    job_name: str
    status: str
    event_time_ms: int
    fields: dict[str, Any]  # from the event: always current
    origin_fields: dict[str, Any]  # from the job's tags: only fill gaps

    @property
    def is_terminal(self) -> bool:
        return self.status in audit.TERMINAL_STATUSES


def _tags(detail: Mapping[str, Any]) -> dict[str, str]:
    tags = detail.get("Tags") or {}
    if isinstance(tags, list):  # DescribeTrainingJob-style list, in case
        return {str(t.get("Key")): str(t.get("Value", "")) for t in tags if isinstance(t, Mapping)}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    return {}


def _metrics(final_metrics: Any) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for item in final_metrics or []:
        if not isinstance(item, Mapping):
            continue
        name, value = item.get("MetricName"), item.get("Value")
        if isinstance(name, str) and isinstance(value, int | float) and math.isfinite(value):
            metrics[name] = float(value)
    return metrics


def _data_location(detail: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Bucket and data prefix from the train channel's S3Uri (`s3://bucket/<prefix>train/`)."""
    for channel in detail.get("InputDataConfig") or []:
        if not isinstance(channel, Mapping) or channel.get("ChannelName") != "train":
            continue
        uri = str(((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri", ""))
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            key = key if key.endswith("/") else key + "/"
            return bucket, key.removesuffix("train/")
    return None, None


def _event_time_ms(event: Mapping[str, Any], detail: Mapping[str, Any]) -> int:
    modified = audit.epoch_millis(detail.get("LastModifiedTime"))
    if modified is not None:
        return modified
    stamp = event.get("time")
    if isinstance(stamp, str):
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            pass
    raise BadInputError("state-change event has neither detail.LastModifiedTime nor a valid time")


def parse_event(event: Any, pipeline_name: str = "") -> StateChange:
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
    name, status = detail.get("TrainingJobName"), detail.get("TrainingJobStatus")
    if not isinstance(name, str) or not name:
        raise BadInputError(f"event {event_id}: detail.TrainingJobName is missing")
    if status not in audit.STATUS_RANK:
        raise BadInputError(
            f"event {event_id}: unknown TrainingJobStatus {status!r} (known: {', '.join(audit.STATUS_RANK)})"
        )
    fields = _job_fields(detail)
    tags = _tags(detail)
    origin = {attribute: tags.get(tag) for tag, attribute in TAG_FIELDS.items()}
    origin["pipeline_name"] = pipeline_name
    return StateChange(
        event_id=event_id,
        job_name=name,
        status=str(status),
        event_time_ms=_event_time_ms(event, detail),
        fields=fields,
        origin_fields=origin,
    )


def _job_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """Record attributes from an event detail or a DescribeTrainingJob response (whatever of them is there)."""
    resources = job.get("ResourceConfig") or {}
    status = job.get("TrainingJobStatus")
    bucket, prefix = _data_location(job)
    fields: dict[str, Any] = {
        "data_bucket": bucket,
        "data_prefix": prefix,
        "job_arn": job.get("TrainingJobArn"),
        "secondary_status": job.get("SecondaryStatus"),
        "image_uri": (job.get("AlgorithmSpecification") or {}).get("TrainingImage"),
        "hyperparameters": {str(k): str(v) for k, v in (job.get("HyperParameters") or {}).items()},
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "created_at": audit.iso_from_millis(job.get("CreationTime")),
        "started_at": audit.iso_from_millis(job.get("TrainingStartTime")),
        "ended_at": audit.iso_from_millis(job.get("TrainingEndTime")),
        # Documented only for Failed: a Stopped or Completed job's reason would be noise or stale.
        "failure_reason": job.get("FailureReason") if status == "Failed" else None,
        # Only in DescribeTrainingJob, never in the event (EventBridge's schema has none of them).
        "billable_seconds": job.get("BillableTimeInSeconds"),
        "training_seconds": job.get("TrainingTimeInSeconds"),
        "use_spot": job.get("EnableManagedSpotTraining"),
        "metrics": _metrics(job.get("FinalMetricDataList")),
    }
    if status == "Completed":
        fields["model_artifact"] = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    return fields


def with_description(change: StateChange) -> StateChange:
    """A terminal event completed from DescribeTrainingJob: final metrics, billable and training time,
    spot, the failure reason and the model, which the event does not carry."""
    description = aws.client("sagemaker").describe_training_job(TrainingJobName=change.job_name)
    described = audit.clean(_job_fields(description))
    if description.get("TrainingJobStatus") != change.status:
        # A terminal status never changes; a describe that disagrees is eventually-consistent: retry later.
        raise RuntimeError(
            f"DescribeTrainingJob says {change.job_name} is {description.get('TrainingJobStatus')}, "
            f"the event says {change.status}"
        )
    return StateChange(
        change.event_id,
        change.job_name,
        change.status,
        change.event_time_ms,
        {**change.fields, **described},
        change.origin_fields,
    )


def record_and_notify(
    change: StateChange, settings: RecordStatusSettings, invocation_id: str
) -> dict[str, Any]:
    """Apply the change; send the email if this transition's email has not been sent."""
    if change.is_terminal:
        change = with_description(change)
    write = audit.apply_status(
        settings.audit_table_name,
        change.job_name,
        change.status,
        change.event_time_ms,
        change.fields,
        change.origin_fields,
    )
    result: dict[str, Any] = {
        "job_name": change.job_name,
        "status": change.status,
        "outcome": write.outcome,
        "emailed": False,
    }
    if write.outcome == audit.IGNORED:
        logger.info(
            "event %s for %s changed nothing (duplicate or older status)", change.event_id, change.job_name
        )
    if not audit.take_notification_lease(
        settings.audit_table_name, change.job_name, change.status, invocation_id
    ):
        return result
    record = audit.get_record(settings.audit_table_name, change.job_name) or write.record
    message_id = notify.publish(
        settings.topic_arn, settings.project_name, settings.env_name, settings.pipeline_name, record
    )
    audit.mark_notified(settings.audit_table_name, change.job_name, change.status)
    result.update(emailed=True, message_id=message_id)
    return result
