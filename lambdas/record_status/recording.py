"""What record-status does with one SageMaker state-change event, as plain functions.

Two kinds of event: *SageMaker Training Job State Change* and *SageMaker HyperParameter Tuning Job State
Change*. Parse and validate the event (a malformed one raises BadInputError before anything is written); on
a terminal status, read what the event does not carry from SageMaker: DescribeTrainingJob for a training job
(final metrics, billable and training time, spot, the failure reason, the model; for a Completed job, the
task, objective and classes from its output.tar.gz, see `pipeline_common.model_meta`), and for a tuning job
DescribeHyperParameterTuningJob (the best training job and its objective value, the trial counts), the best
job's description (model, metrics) and every trial's (billable and training time, summed); apply it all to
the audit record with a conditional update; and send the email for a real transition under a lease (see
`pipeline_common.audit`).

A training job launched by a tuning job (a *trial*: it carries the tuning job's `tuning-job` tag, which
SageMaker copies to every trial) gets its own record, marked with its tuning job, and no email: the tuning
job's email summarizes the trials.

What it guarantees, with events delivered at least once and in any order, and a crash or a lost response
possible between any two calls:
- the record's status only moves forward (InProgress < Stopping < a terminal status), whatever the order;
- the email of each transition is sent at least once, after retries and a DLQ redrive; twice only when SNS
  accepted it and the invocation died before recording that (the ambiguity AWS itself leaves);
- no email for a status the record has already moved past, and none for a trial of a tuning job.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline_common import audit, aws, model_meta, notify, training_job
from pipeline_common.errors import BadInputError
from pipeline_common.settings import RecordStatusSettings

logger = logging.getLogger(__name__)

DETAIL_TYPE = "SageMaker Training Job State Change"
TUNING_DETAIL_TYPE = "SageMaker HyperParameter Tuning Job State Change"
DETAIL_TYPES = (DETAIL_TYPE, TUNING_DETAIL_TYPE)
SOURCE = "aws.sagemaker"
# Tuning job statuses that say nothing about the run (the job's record is already terminal by then).
UNTRACKED_TUNING_STATUSES = frozenset({"Deleting", "DeleteFailed"})
# SageMaker names a tuning job's training jobs `<tuning job>-<nnn>-<8 hex>`: what tells a trial apart if its
# event lacks the tuning job's tag.
TRIAL_NAME = re.compile(r"^(?P<tuning>.+)-\d{3}-[0-9a-f]{8}$")

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


class NotTracked(Exception):
    """A valid event the audit trail does not follow (a tuning job being deleted)."""


@dataclass(frozen=True)
class StateChange:
    event_id: str
    job_name: str
    status: str
    event_time_ms: int
    fields: dict[str, Any]  # from the event: always current
    origin_fields: dict[str, Any]  # from the job's tags: only fill gaps
    kind: str = training_job.KIND_TRAINING
    tuning_job: str | None = None  # set for a trial of a tuning job

    @property
    def is_terminal(self) -> bool:
        return self.status in audit.TERMINAL_STATUSES

    @property
    def is_trial(self) -> bool:
        return self.tuning_job is not None

    def with_fields(self, fields: Mapping[str, Any]) -> StateChange:
        return StateChange(
            self.event_id,
            self.job_name,
            self.status,
            self.event_time_ms,
            {**self.fields, **fields},
            self.origin_fields,
            self.kind,
            self.tuning_job,
        )


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
    detail_type = event.get("detail-type")
    if detail_type not in DETAIL_TYPES or event.get("source") != SOURCE:
        raise BadInputError(
            f"expected source {SOURCE!r} and detail-type {' or '.join(map(repr, DETAIL_TYPES))}, got "
            f"{event.get('source')!r} / {event.get('detail-type')!r}"
        )
    event_id, detail = event.get("id"), event.get("detail")
    if not isinstance(event_id, str) or not event_id:
        raise BadInputError("EventBridge event has no id")
    if not isinstance(detail, Mapping):
        raise BadInputError(f"event {event_id} has no detail object")
    tuning = detail_type == TUNING_DETAIL_TYPE
    name_field, status_field = (
        ("HyperParameterTuningJobName", "HyperParameterTuningJobStatus")
        if tuning
        else ("TrainingJobName", "TrainingJobStatus")
    )
    name, status = detail.get(name_field), detail.get(status_field)
    if not isinstance(name, str) or not name:
        raise BadInputError(f"event {event_id}: detail.{name_field} is missing")
    if tuning and status in UNTRACKED_TUNING_STATUSES:
        raise NotTracked(f"tuning job {name} is {status}")
    if status not in audit.STATUS_RANK:
        raise BadInputError(
            f"event {event_id}: unknown {status_field} {status!r} (known: {', '.join(audit.STATUS_RANK)})"
        )
    tags = _tags(detail)
    origin = {attribute: tags.get(tag) for tag, attribute in TAG_FIELDS.items()}
    origin["pipeline_name"] = pipeline_name
    fields = _tuning_fields(detail) if tuning else _job_fields(detail)
    parent = None if tuning else trial_of(name, tags)
    if parent:
        fields["tuning_job"] = parent
    return StateChange(
        event_id=event_id,
        job_name=name,
        status=str(status),
        event_time_ms=_event_time_ms(event, detail),
        fields=fields,
        origin_fields=origin,
        kind=training_job.KIND_TUNING if tuning else training_job.KIND_TRAINING,
        tuning_job=parent,
    )


def trial_of(name: str, tags: Mapping[str, str], tuning_job_arn: Any = None) -> str | None:
    """The tuning job a training job belongs to, or None: its tag (copied from the tuning job), the
    TuningJobArn of its description, or SageMaker's trial naming."""
    tagged = tags.get(training_job.TAG_TUNING_JOB)
    if tagged and tagged != name:
        return tagged
    if isinstance(tuning_job_arn, str) and "/" in tuning_job_arn:
        return tuning_job_arn.rsplit("/", 1)[1]
    match = TRIAL_NAME.match(name)
    if match and len(match["tuning"]) <= training_job.MAX_TUNING_JOB_NAME:
        return match["tuning"]
    return None


def _job_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """Record attributes from an event detail or a DescribeTrainingJob response (whatever of them is there)."""
    resources = job.get("ResourceConfig") or {}
    status = job.get("TrainingJobStatus")
    bucket, prefix = _data_location(job)
    fields: dict[str, Any] = {
        "kind": training_job.KIND_TRAINING,
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


def _tuning_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """Record attributes from a tuning event detail or a DescribeHyperParameterTuningJob response."""
    definition = job.get("TrainingJobDefinition") or {}
    resources = definition.get("ResourceConfig") or {}
    status = job.get("HyperParameterTuningJobStatus")
    bucket, prefix = _data_location(definition)
    config = job.get("HyperParameterTuningJobConfig") or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    counters = job.get("TrainingJobStatusCounters") or {}
    return {
        "kind": training_job.KIND_TUNING,
        "data_bucket": bucket,
        "data_prefix": prefix,
        "job_arn": job.get("HyperParameterTuningJobArn"),
        "secondary_status": status,
        "image_uri": (definition.get("AlgorithmSpecification") or {}).get("TrainingImage"),
        "hyperparameters": {
            str(k): str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()
        },
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "created_at": audit.iso_from_millis(job.get("CreationTime")),
        "started_at": audit.iso_from_millis(job.get("CreationTime")),
        "ended_at": audit.iso_from_millis(job.get("HyperParameterTuningEndTime")),
        "failure_reason": job.get("FailureReason") if status == "Failed" else None,
        "use_spot": definition.get("EnableManagedSpotTraining"),
        "objective_metric": objective.get("MetricName"),
        "trial_counts": {str(k): int(v) for k, v in counters.items() if isinstance(v, int) and v} or None,
    }


def with_description(change: StateChange) -> StateChange:
    """A terminal event completed from DescribeTrainingJob: final metrics, billable and training time,
    spot, the failure reason and the model, which the event does not carry."""
    if change.kind == training_job.KIND_TUNING:
        return with_tuning_description(change)
    description = aws.client("sagemaker").describe_training_job(TrainingJobName=change.job_name)
    described = audit.clean(_job_fields(description))
    if description.get("TrainingJobStatus") != change.status:
        # A terminal status never changes; a describe that disagrees is eventually-consistent: retry later.
        raise RuntimeError(
            f"DescribeTrainingJob says {change.job_name} is {description.get('TrainingJobStatus')}, "
            f"the event says {change.status}"
        )
    parent = change.tuning_job or trial_of(change.job_name, {}, description.get("TuningJobArn"))
    if change.status == "Completed" and not parent:
        # Task, objective and classes: text the final metrics cannot carry (pipeline_common.model_meta).
        # Not for a trial: its tuning job's record reads its best trial's.
        described = audit.clean({**described, "model_meta": model_meta.read(described.get("model_artifact"))})
    if parent and change.tuning_job is None:
        return StateChange(
            change.event_id,
            change.job_name,
            change.status,
            change.event_time_ms,
            {**change.fields, **described, "tuning_job": parent},
            change.origin_fields,
            change.kind,
            parent,
        )
    return change.with_fields(described)


def with_tuning_description(change: StateChange) -> StateChange:
    """A finished tuning job: its best training job (name, objective value, model, metrics), the trial
    counts, and the billable and training time of all its trials (for the cost and the spot savings)."""
    sagemaker = aws.client("sagemaker")
    description = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=change.job_name)
    if description.get("HyperParameterTuningJobStatus") != change.status:
        raise RuntimeError(
            f"DescribeHyperParameterTuningJob says {change.job_name} is "
            f"{description.get('HyperParameterTuningJobStatus')}, the event says {change.status}"
        )
    fields = audit.clean(_tuning_fields(description))
    best = description.get("BestTrainingJob") or {}
    if best.get("TrainingJobName"):
        objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        best_description = sagemaker.describe_training_job(TrainingJobName=best["TrainingJobName"])
        best_fields = _job_fields(best_description)
        fields.update(
            best_training_job=best["TrainingJobName"],
            objective_value=_finite(objective.get("Value")),
            metrics=best_fields["metrics"],
            best_hyperparameters={
                str(k): str(v) for k, v in (best.get("TunedHyperParameters") or {}).items()
            },
        )
        if change.status == "Completed":
            fields["model_artifact"] = best_fields.get("model_artifact")
            fields["model_meta"] = model_meta.read(best_fields.get("model_artifact"))
    billable = training = 0
    for trial in _trials(sagemaker, change.job_name):
        trial_description = sagemaker.describe_training_job(TrainingJobName=trial)
        billable += int(trial_description.get("BillableTimeInSeconds") or 0)
        training += int(trial_description.get("TrainingTimeInSeconds") or 0)
    fields.update(billable_seconds=billable, training_seconds=training)
    return change.with_fields(audit.clean(fields))


def _trials(sagemaker: Any, tuning_job: str) -> list[str]:
    names: list[str] = []
    request: dict[str, Any] = {"HyperParameterTuningJobName": tuning_job, "MaxResults": 100}
    while True:
        page = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(**request)
        names += [summary["TrainingJobName"] for summary in page.get("TrainingJobSummaries", [])]
        if not page.get("NextToken"):
            return names
        request["NextToken"] = page["NextToken"]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def record_and_notify(
    change: StateChange, settings: RecordStatusSettings, invocation_id: str
) -> dict[str, Any]:
    """Apply the change; send the email if this transition's email has not been sent."""
    if change.is_terminal:
        change = with_description(change)
    if change.fields.get("use_spot") and change.fields.get("training_seconds"):
        change = change.with_fields(
            {
                "spot_savings": notify.spot_savings(
                    change.fields.get("billable_seconds"), change.fields["training_seconds"]
                )
            }
        )
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
    if change.is_trial:
        # One email per tuning job, which summarizes its trials; none per trial.
        result["trial_of"] = change.tuning_job
        return result
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
