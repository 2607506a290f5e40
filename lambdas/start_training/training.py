"""What the start-training action does, as plain functions (the handler only parses the event).

What it guarantees, with invocations delivered at least once, a crash possible between any two calls, and
any call possibly applied while the caller sees an error:

- **One training job per pipeline execution.** The job's name comes from the execution id; `ResourceInUse`
  means this execution created it already, and the action carries on with it.
- **One data version per execution.** The first invocation lists the data and writes the manifest next to
  the model (only if none exists); every retry reads it back, so the job, its tags and the record agree.
- **A transient error never fails the action.** Throttling, a 5xx or a timeout that outlasts botocore's
  retries keeps the action open with a continuation token, and the next invocation repeats the step.
- **Only a real job failure or a bad input fails the action**, and then a job of this execution that is
  still running is stopped, so nothing runs and bills behind a failed action.
- **Each CodePipeline job takes one result.** A second one (`InvalidJobStateException`: an earlier result
  was applied, or the action ended) is logged, not raised; if the execution has ended, its job is stopped.
  A result that cannot be reported at all raises, so Lambda retries the invocation with the same job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline_common import audit, aws, data_version, training_job
from pipeline_common.errors import BadInputError, TrainingJobError
from pipeline_common.pipeline_action import (
    ActionResult,
    failure_type_for,
    parameters,
    put_result,
)
from pipeline_common.settings import StartTrainingSettings
from pipeline_common.training_job import JobParameters

logger = logging.getLogger(__name__)

REQUIRED_PARAMETERS = ("image_uri", "commit_id", "branch", "repo", "pipeline_execution_id")
OPTIONAL_PARAMETERS = ("image_digest", "trigger")
DEFAULT_TRIGGER = "push"
TOKEN_VERSION = 2
PHASE_START = "start"  # the job may not exist yet: repeat the (idempotent) start
PHASE_WAIT = "wait"  # the job exists: describe it
ENDED_EXECUTION = frozenset({"Failed", "Stopped", "Stopping", "Superseded", "Cancelled", "Succeeded"})


# -- parameters and tokens -------------------------------------------------------------------------------
def parse_parameters(raw: Any) -> JobParameters:
    values = parameters(raw, REQUIRED_PARAMETERS, OPTIONAL_PARAMETERS)
    return JobParameters(
        image_uri=values["image_uri"],
        image_digest=values["image_digest"],
        commit_id=values["commit_id"],
        branch=values["branch"],
        repo=values["repo"],
        pipeline_execution_id=values["pipeline_execution_id"],
        trigger=values["trigger"] or DEFAULT_TRIGGER,
    )


@dataclass(frozen=True)
class Token:
    job_name: str
    phase: str = PHASE_WAIT
    data_version: str = ""


def encode_token(token: Token) -> str:
    return json.dumps(
        {
            "v": TOKEN_VERSION,
            "job_name": token.job_name,
            "phase": token.phase,
            "data_version": token.data_version,
        }
    )


def decode_token(text: str) -> Token:
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        raise BadInputError(f"continuation token is not JSON: {text[:200]!r}") from None
    name = decoded.get("job_name") if isinstance(decoded, dict) else None
    if not isinstance(name, str) or not name:
        raise BadInputError(f"continuation token has no job_name: {text[:200]!r}")
    phase = decoded.get("phase", PHASE_WAIT)
    if phase not in (PHASE_START, PHASE_WAIT):
        raise BadInputError(f"continuation token has an unknown phase {phase!r}")
    return Token(name, phase, str(decoded.get("data_version", "")))


# -- the audit record ---------------------------------------------------------------------------------------
def first_record(
    settings: StartTrainingSettings,
    params: JobParameters,
    data: data_version.DataVersion,
    name: str,
    description: Mapping[str, Any] | None,
    job_arn: str | None,
) -> dict[str, Any]:
    config = settings.training
    now = audit.now_iso()
    created = audit.iso_from_millis((description or {}).get("CreationTime")) or now
    versions = data.version_ids
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
        "data_version": data.manifest_hash,
        "data_manifest": training_job.s3_uri(
            settings.model_bucket, training_job.manifest_key(settings, name)
        ),
        "data_object_count": len(versions),
        # The exact version ids inline while they are few; the manifest holds them at any size.
        "data_versions": versions if len(versions) <= data_version.INLINE_VERSION_LIMIT else None,
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


# -- the two steps -------------------------------------------------------------------------------------------
def start(settings: StartTrainingSettings, params: JobParameters, name: str) -> ActionResult:
    """Pin the data, create the job (or find it), write the first record: idempotent as a whole."""
    data = data_version.pin(
        settings.data_bucket,
        settings.data_prefix,
        settings.model_bucket,
        training_job.manifest_key(settings, name),
    )
    request = training_job.create_request(settings, params, data, name)
    sagemaker = aws.client("sagemaker")
    description: dict[str, Any] | None = None
    try:
        job_arn = sagemaker.create_training_job(**request).get("TrainingJobArn")
        logger.info(
            "created training job %s", name, extra={"job_name": name, "data_version": data.manifest_hash}
        )
    except Exception as error:
        if aws.error_code(error) != "ResourceInUse":
            raise
        # A retried invocation, or a create applied while its caller saw an error: the job is this execution's.
        description = sagemaker.describe_training_job(TrainingJobName=name)
        job_arn = description.get("TrainingJobArn")
        logger.info(
            "training job %s already exists (%s); carrying on", name, description.get("TrainingJobStatus")
        )
    if not audit.create_record(
        settings.audit_table_name, first_record(settings, params, data, name, description, job_arn)
    ):
        logger.info("audit record for %s existed already; filled in missing fields", name)
    summary = f"Training job {name} started (data v{data.manifest_hash})"
    return ActionResult(
        "continue", name, summary, token=encode_token(Token(name, PHASE_WAIT, data.manifest_hash))
    )


def check(token: Token) -> ActionResult:
    name = token.job_name
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
        return ActionResult(
            "continue", name, f"Training job {name}: {status} ({secondary})", token=encode_token(token)
        )
    if status == "Completed":
        artifact = str((description.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""))
        outputs = {"MODEL_ARTIFACT": artifact, "TRAINING_JOB_NAME": name}
        return ActionResult("succeeded", name, f"Training job {name} completed: {artifact}", outputs)
    if status in audit.TERMINAL_STATUSES:
        reason = str(description.get("FailureReason") or "no FailureReason given")
        return ActionResult("failed", name, f"Training job {name} {status}: {reason}")
    raise TrainingJobError(f"training job {name} has an unknown status {status!r}")


# -- one invocation ------------------------------------------------------------------------------------------
def handle(job_id: str, continuation: str | None, raw_parameters: Any) -> ActionResult:
    """Run the step this invocation is for, decide the outcome, and report it once (see the module docstring)."""
    settings: StartTrainingSettings | None = None
    params: JobParameters | None = None
    token: Token | None = None
    try:
        settings = StartTrainingSettings.from_env()
        token = decode_token(continuation) if continuation else None
        if token is None or token.phase == PHASE_START:
            params = parse_parameters(raw_parameters)
            name = (
                token.job_name
                if token
                else training_job.job_name(settings.job_name_prefix, params.pipeline_execution_id)
            )
            token = Token(name, PHASE_START)
            result = start(settings, params, name)
        else:
            result = check(token)
    except Exception as error:
        result = _outcome_of_error(error, settings, token)
    if result.outcome == "failed" and settings is not None and result.job_name:
        stop_if_running(result.job_name)
    report(job_id, result, settings, params)
    return result


def _outcome_of_error(
    error: Exception, settings: StartTrainingSettings | None, token: Token | None
) -> ActionResult:
    message = f"{type(error).__name__}: {error}"
    if aws.is_transient(error) and settings is not None and token is not None:
        logger.warning("transient error, the action stays open and retries: %s", message)
        summary = f"Training job {token.job_name}: retrying after a transient error ({message[:300]})"
        return ActionResult("continue", token.job_name, summary, token=encode_token(token))
    logger.error("start-training failed: %s", message, exc_info=error)
    return ActionResult(
        "failed", token.job_name if token else None, message, failure_type=failure_type_for(error)
    )


def stop_if_running(name: str) -> None:
    """Stop this execution's job if it is still running; best effort (the failure is reported either way)."""
    sagemaker = aws.client("sagemaker")
    try:
        status = sagemaker.describe_training_job(TrainingJobName=name).get("TrainingJobStatus")
        if status == "InProgress":
            sagemaker.stop_training_job(TrainingJobName=name)
            logger.warning("stopped training job %s: its pipeline action failed", name)
    except Exception as error:
        if aws.error_code(error) not in (
            "ValidationException",
            "ResourceNotFound",
        ):  # no job: nothing to stop
            logger.warning("could not stop training job %s: %s", name, error)


# -- CodePipeline results --------------------------------------------------------------------------------------
def report(
    job_id: str, result: ActionResult, settings: StartTrainingSettings | None, params: JobParameters | None
) -> None:
    if put_result(job_id, result):
        return
    # The job had a result already: if the execution has ended meanwhile, nothing may keep training for it.
    if settings is not None and params is not None and result.job_name and _execution_ended(settings, params):
        stop_if_running(result.job_name)


def _execution_ended(settings: StartTrainingSettings, params: JobParameters) -> bool:
    try:
        execution = aws.client("codepipeline").get_pipeline_execution(
            pipelineName=settings.pipeline_name, pipelineExecutionId=params.pipeline_execution_id
        )
    except Exception as error:
        logger.warning("could not read pipeline execution %s: %s", params.pipeline_execution_id, error)
        return False
    return execution["pipelineExecution"].get("status") in ENDED_EXECUTION
