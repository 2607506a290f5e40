"""What the evaluate-model action (the quality gate) does, as plain functions; the handler only parses.

It compares the new job's final metrics with the current Approved package's and with the configured floor
(`pipeline_common.quality_gate`), writes the evaluation document next to the model, mirrors the decision
on the audit record, emails a failure, and reports the action's result.

Where the numbers come from, and why:
- **The new model's metrics: DescribeTrainingJob's FinalMetricDataList.** The Train action succeeded, so
  the job is Completed and SageMaker has its final metrics now. The audit record gets them from
  record-status, which runs on a state-change event that may arrive late or out of order, so the record
  is not a source the gate can wait for (Evaluate fills them in on the record if they are not there yet).
- **The approved model's metrics: its package's ModelMetrics document** (ModelQuality.Statistics, the
  evaluation.json its own Evaluate wrote). It is what the registry says about the package, also for a
  package whose audit record is gone.

What it guarantees, with invocations delivered at least once, a crash possible between any two calls, and
any call possibly applied while its caller sees an error:
- **One gate decision per training job.** The first invocation decides and writes the evaluation document
  only if none exists (`If-None-Match`); every later invocation reads that document back and reports the
  same decision, even if an approval changed the baseline in between. The record keeps the first decision.
- **A failed gate is emailed before the action fails**, at least once (the record's email lease): the
  failure is reported only after SNS accepted the email, so a retry that meets a failed report still sends
  it. While another invocation holds the lease, the action stays open and the next invocation retries.
- **A transient error never fails the action**: it stays open with a continuation token and the next
  invocation repeats every step (each is idempotent). Only a gate that does not pass, a job that did not
  complete, or a bad input fails it.
- **Each CodePipeline job takes one result** (`pipeline_common.pipeline_action.put_result`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline_common import audit, aws, model_package, notify, quality_gate
from pipeline_common.errors import TrainingJobError
from pipeline_common.pipeline_action import (
    FAILED,
    SUCCEEDED,
    ActionResult,
    outcome_of_error,
    parameters,
    put_result,
)
from pipeline_common.quality_gate import Baseline, GateResult
from pipeline_common.settings import EvaluateSettings

logger = logging.getLogger(__name__)

REQUIRED_PARAMETERS = ("training_job_name", "pipeline_execution_id")
RETRY_TOKEN = json.dumps({"v": 1, "step": "evaluate"})  # every step is idempotent: a retry repeats them all
GATE_FAILED_EMAIL = "quality-gate-failed"
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
UNREADABLE = NOT_FOUND | {"AccessDenied", "403"}


def final_metrics(description: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for item in description.get("FinalMetricDataList") or []:
        name, value = item.get("MetricName"), item.get("Value")
        if isinstance(name, str) and isinstance(value, int | float):
            metrics[name] = float(value)
    return metrics


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def read_json(uri: str) -> dict[str, Any] | None:
    """An S3 JSON document; None when it does not exist."""
    bucket, key = _split(uri)
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if aws.error_code(error) in NOT_FOUND:
            return None
        raise
    document = json.loads(body)
    return document if isinstance(document, dict) else None


def baseline(settings: EvaluateSettings) -> Baseline | None:
    """The latest Approved package of the group, with its value of the gate's metric (None if its
    evaluation document cannot be read or does not report it: the floor then decides alone)."""
    package = model_package.latest_approved(aws.client("sagemaker"), settings.model_package_group)
    if package is None:
        return None
    parsed = model_package.parse_package_arn(str(package["ModelPackageArn"]))
    version = int(package.get("ModelPackageVersion") or (parsed[1] if parsed else 0))
    properties = package.get("CustomerMetadataProperties") or {}
    value: float | None = None
    uri = model_package.evaluation_uri(package)
    if uri:
        try:
            document = read_json(uri) or {}
        except Exception as error:
            if aws.error_code(error) not in UNREADABLE:
                raise
            logger.warning("cannot read the approved package's evaluation %s: %s", uri, error)
            document = {}
        reported = (document.get("metrics") or {}).get(settings.quality_gate.metric)
        value = float(reported) if isinstance(reported, int | float) else None
    return Baseline(
        package_arn=str(package["ModelPackageArn"]),
        version=version,
        value=value,
        training_job=properties.get(model_package.META_TRAINING_JOB),
        data_version=properties.get(model_package.META_DATA_VERSION),
    )


def decide_once(
    settings: EvaluateSettings, name: str, metrics: dict[str, float], record: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The job's evaluation document (the first invocation's decision) and its S3 URI."""
    key = model_package.evaluation_key(settings.model_prefix, name)
    uri = f"s3://{settings.model_bucket}/{key}"
    existing = read_json(uri)
    if existing is not None:
        logger.info("the gate decided already for %s: %s", name, existing["quality_gate"]["status"])
        return existing, uri
    result = quality_gate.decide(settings.quality_gate, metrics, baseline(settings))
    document = {
        "training_job": name,
        "data_version": record.get("data_version"),
        "metrics": metrics,
        "quality_gate": result.as_record(),
        "evaluated_at": audit.now_iso(),
    }
    try:
        aws.client("s3").put_object(
            Bucket=settings.model_bucket,
            Key=key,
            Body=json.dumps(document, indent=2, sort_keys=True).encode(),
            ContentType=model_package.EVALUATION_CONTENT_TYPE,
            IfNoneMatch="*",
        )
    except Exception as error:
        if aws.error_code(error) not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
        # Another invocation (or this one's applied-but-lost write) decided first: that decision stands.
        existing = read_json(uri)
        if existing is None:
            raise
        return existing, uri
    return document, uri


def evaluate(settings: EvaluateSettings, name: str) -> ActionResult:
    description = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    if description.get("TrainingJobStatus") != "Completed":
        raise TrainingJobError(
            f"training job {name} is {description.get('TrainingJobStatus')}, not Completed: nothing to evaluate"
        )
    record = audit.get_record(settings.audit_table_name, name)
    if record is None:
        raise TrainingJobError(f"no audit record for training job {name}: start-training writes it first")
    metrics = final_metrics(description)
    artifact = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    # Record-status may not have recorded these yet (its event can come late): fill in, never overwrite.
    audit.fill_missing(settings.audit_table_name, name, {"metrics": metrics, "model_artifact": artifact})
    document, uri = decide_once(settings, name, metrics, record)
    result = GateResult.from_record(document["quality_gate"])
    record = audit.record_gate(
        settings.audit_table_name,
        name,
        {
            "gate": result.as_record(),
            "gate_status": result.status,
            "evaluation_uri": uri,
            "evaluated_at": document.get("evaluated_at"),
        },
    )
    if result.passed:
        return ActionResult(
            SUCCEEDED,
            name,
            f"Quality gate passed: {result.reason}",
            {
                "GATE": result.status,
                "EVALUATION_URI": uri,
                "BASELINE_PACKAGE": result.baseline_package_arn or "none",
            },
        )
    email_failure(settings, name, record)
    return ActionResult(FAILED, name, f"Quality gate failed: {result.reason}", failure_type="JobFailed")


def email_failure(settings: EvaluateSettings, name: str, record: dict[str, Any]) -> None:
    """The failed gate's email, at least once. Raises LeaseHeld while another invocation is sending it."""
    token = f"evaluate:{name}"  # any invocation for this job may finish another's email
    if not audit.take_email_lease(settings.audit_table_name, name, GATE_FAILED_EMAIL, token):
        return
    email = notify.gate_failed_email(settings.project_name, settings.env_name, settings.pipeline_name, record)
    notify.send(settings.topic_arn, email)
    audit.mark_emailed(settings.audit_table_name, name, GATE_FAILED_EMAIL)


def handle(job_id: str, raw_parameters: Any) -> ActionResult:
    """Evaluate, decide the outcome, and report it once (see the module docstring)."""
    name: str | None = None
    try:
        settings = EvaluateSettings.from_env()
        name = parameters(raw_parameters, REQUIRED_PARAMETERS)["training_job_name"]
        result = evaluate(settings, name)
    except Exception as error:
        result = outcome_of_error(error, name, "evaluate-model", RETRY_TOKEN)
    put_result(job_id, result)
    return result
