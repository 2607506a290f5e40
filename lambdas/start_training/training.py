"""What the start-training action does, as plain functions (the handler only parses and reports).

First invocation: validate the user parameters, pin the data version, create the job under its
deterministic name (ResourceInUse: it exists already, carry on), write the first audit record, and answer
CodePipeline with a continuation token. Later invocations: describe the job and continue, succeed with
output variables, or fail with the job's FailureReason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline_common import audit, aws, data_version, training_job
from pipeline_common.errors import BadInputError, ConfigurationError, TrainingJobError
from pipeline_common.settings import StartTrainingSettings
from pipeline_common.training_job import JobParameters

logger = logging.getLogger(__name__)

REQUIRED_PARAMETERS = ("image_uri", "commit_id", "branch", "repo", "pipeline_execution_id")
OPTIONAL_PARAMETERS = ("image_digest", "trigger")
DEFAULT_TRIGGER = "push"
MAX_FAILURE_MESSAGE = 5000
MAX_SUMMARY = 2048
TOKEN_VERSION = 1


@dataclass(frozen=True)
class ActionResult:
    """What was reported to CodePipeline (also the handler's return value, for logs and tests)."""

    outcome: str  # "continue", "succeeded" or "failed"
    job_name: str | None = None
    message: str = ""
    output_variables: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "job_name": self.job_name,
            "message": self.message,
            "output_variables": self.output_variables,
        }


# -- parameters --------------------------------------------------------------------------------------------
def _resolved(value: Any) -> str:
    """A parameter CodePipeline did not resolve stays `#{Namespace.Variable}`: treat it as missing."""
    text = str(value).strip() if value is not None else ""
    return "" if text.startswith("#{") else text


def parse_parameters(raw: Any) -> JobParameters:
    if not isinstance(raw, Mapping):
        raise BadInputError("UserParameters must be a JSON object with " + ", ".join(REQUIRED_PARAMETERS))
    values = {name: _resolved(raw.get(name)) for name in (*REQUIRED_PARAMETERS, *OPTIONAL_PARAMETERS)}
    missing = [name for name in REQUIRED_PARAMETERS if not values[name]]
    if missing:
        raise BadInputError(
            f"UserParameters is missing {', '.join(missing)} (empty or unresolved); the Train action must pass "
            f"{', '.join(REQUIRED_PARAMETERS)}"
        )
    return JobParameters(
        image_uri=values["image_uri"],
        image_digest=values["image_digest"],
        commit_id=values["commit_id"],
        branch=values["branch"],
        repo=values["repo"],
        pipeline_execution_id=values["pipeline_execution_id"],
        trigger=values["trigger"] or DEFAULT_TRIGGER,
    )


def encode_token(job_name: str, data_version_hash: str) -> str:
    return json.dumps({"v": TOKEN_VERSION, "job_name": job_name, "data_version": data_version_hash})


def decode_token(token: str) -> str:
    """The job name a continuation token carries."""
    try:
        decoded = json.loads(token)
    except json.JSONDecodeError:
        raise BadInputError(f"continuation token is not JSON: {token[:200]!r}") from None
    name = decoded.get("job_name") if isinstance(decoded, dict) else None
    if not isinstance(name, str) or not name:
        raise BadInputError(f"continuation token has no job_name: {token[:200]!r}")
    return name


# -- CodePipeline results ------------------------------------------------------------------------------------
def report_success(job_id: str, **details: Any) -> None:
    aws.client("codepipeline").put_job_success_result(jobId=job_id, **details)


def report_failure(
    job_id: str, message: str, failure_type: str = "JobFailed", job_name: str | None = None
) -> None:
    failure: dict[str, str] = {"type": failure_type, "message": message[:MAX_FAILURE_MESSAGE] or "failed"}
    if job_name:
        failure["externalExecutionId"] = job_name
    aws.client("codepipeline").put_job_failure_result(jobId=job_id, failureDetails=failure)


def failure_type_for(error: BaseException) -> str:
    if isinstance(error, ConfigurationError | BadInputError):
        return "ConfigurationError"
    code = aws.error_code(error)
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
        return "PermissionError"
    return "JobFailed"


# -- the two kinds of invocation ---------------------------------------------------------------------------
def first_record(
    settings: StartTrainingSettings,
    params: JobParameters,
    data: data_version.DataVersion | None,
    data_hash: str,
    name: str,
    description: Mapping[str, Any] | None,
    job_arn: str | None,
) -> dict[str, Any]:
    config = settings.training
    now = audit.now_iso()
    created = audit.iso_from_millis((description or {}).get("CreationTime")) or now
    return {
        "job_name": name,
        "job_arn": job_arn or (description or {}).get("TrainingJobArn"),
        "status": "InProgress",
        "status_rank": audit.CREATED_RANK,
        "secondary_status": (description or {}).get("SecondaryStatus") or "Starting",
        "commit_id": params.commit_id,
        "repo": params.repo,
        "branch": params.branch,
        "data_bucket": settings.data_bucket,
        "data_prefix": settings.data_prefix,
        "data_versions": data.version_ids if data is not None else None,
        "data_version": data_hash,
        "image_uri": params.image_uri,
        "image_digest": params.image_digest,
        "hyperparameters": dict(config.hyperparameters),
        "instance_type": config.instance_type,
        "instance_count": config.instance_count,
        "use_spot": config.use_spot,
        "max_runtime_seconds": config.max_runtime_seconds,
        "pipeline_name": settings.pipeline_name,
        "pipeline_execution_id": params.pipeline_execution_id,
        "trigger": params.trigger,
        "created_at": created,
        "updated_at": now,
    }


def job_tags(sagemaker: Any, description: Mapping[str, Any]) -> dict[str, str]:
    """The job's tags (DescribeTrainingJob does not return them; ListTags does). {} if unavailable."""
    tags: Any = description.get("Tags")
    if tags is None and description.get("TrainingJobArn") and hasattr(sagemaker, "list_tags"):
        try:
            tags = sagemaker.list_tags(ResourceArn=description["TrainingJobArn"]).get("Tags", [])
        except Exception as error:  # only a consistency check depends on it
            logger.warning("could not list the tags of %s: %s", description.get("TrainingJobName"), error)
            return {}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    if isinstance(tags, list):
        return {str(t.get("Key")): str(t.get("Value", "")) for t in tags if isinstance(t, Mapping)}
    return {}


def start(job_id: str, raw_parameters: Any, settings: StartTrainingSettings) -> ActionResult:
    params = parse_parameters(raw_parameters)
    name = training_job.job_name(settings.job_name_prefix, params.pipeline_execution_id)
    data = data_version.resolve(settings.data_bucket, settings.data_prefix)
    if not data.has_channel("train"):
        raise BadInputError(
            f"no training data: s3://{settings.data_bucket}/{settings.data_prefix}train/ has no objects "
            "(zero-byte folder markers do not count)"
        )
    request = training_job.create_request(settings, params, data, name)
    sagemaker = aws.client("sagemaker")
    description: dict[str, Any] | None = None
    job_arn: str | None = None
    data_hash = data.manifest_hash
    recorded_data: data_version.DataVersion | None = data
    try:
        job_arn = sagemaker.create_training_job(**request).get("TrainingJobArn")
        logger.info("created training job %s", name, extra={"job_name": name, "data_version": data_hash})
    except Exception as error:
        if aws.error_code(error) != "ResourceInUse":
            raise TrainingJobError(f"CreateTrainingJob {name} failed: {error}") from error
        # A retried invocation: the job was created before (e.g. the Lambda stopped before the record).
        description = sagemaker.describe_training_job(TrainingJobName=name)
        job_arn = description.get("TrainingJobArn")
        logger.info(
            "training job %s already exists (%s); carrying on", name, description.get("TrainingJobStatus")
        )
        tagged = job_tags(sagemaker, description).get(training_job.TAG_DATA_VERSION, "")
        if tagged and tagged != data_hash:
            # The data changed since the job started: its own tag is the truth, the current listing is not.
            logger.warning("data changed since job %s was created (%s, now %s)", name, tagged, data_hash)
            data_hash, recorded_data = tagged, None
    created = audit.create_record(
        settings.audit_table_name,
        first_record(settings, params, recorded_data, data_hash, name, description, job_arn),
    )
    if not created:
        logger.info("audit record for %s existed already; filled in missing fields", name)
    summary = f"Training job {name} started (data v{data_hash})"
    report_success(
        job_id,
        continuationToken=encode_token(name, data_hash),
        executionDetails={"summary": summary[:MAX_SUMMARY], "externalExecutionId": name},
    )
    return ActionResult("continue", name, summary)


def check(job_id: str, token: str) -> ActionResult:
    name = decode_token(token)
    try:
        description = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    except Exception as error:
        code = aws.error_code(error)
        if code in ("ValidationException", "ResourceNotFound"):
            raise TrainingJobError(
                f"training job {name} from the continuation token does not exist ({code}: {error}); "
                "it may have been deleted, or the token belongs to another account or region"
            ) from error
        raise
    status = str(description.get("TrainingJobStatus", ""))
    secondary = str(description.get("SecondaryStatus", ""))
    if status in audit.RUNNING_STATUSES:
        summary = f"Training job {name}: {status} ({secondary})"
        report_success(
            job_id,
            continuationToken=token,
            executionDetails={"summary": summary[:MAX_SUMMARY], "externalExecutionId": name},
        )
        return ActionResult("continue", name, summary)
    if status == "Completed":
        artifact = str((description.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""))
        outputs = {"MODEL_ARTIFACT": artifact, "TRAINING_JOB_NAME": name}
        summary = f"Training job {name} completed: {artifact}"
        report_success(
            job_id,
            outputVariables=outputs,
            executionDetails={
                "summary": summary[:MAX_SUMMARY],
                "externalExecutionId": name,
                "percentComplete": 100,
            },
        )
        return ActionResult("succeeded", name, summary, outputs)
    if status in audit.TERMINAL_STATUSES:
        reason = str(description.get("FailureReason") or "no FailureReason given")
        message = f"Training job {name} {status}: {reason}"
        report_failure(job_id, message, "JobFailed", name)
        return ActionResult("failed", name, message)
    raise TrainingJobError(f"training job {name} has an unknown status {status!r}")
