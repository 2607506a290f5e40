"""What the start-training action does, as plain functions (the handler only parses the event).

One *run* per pipeline execution: a training job, or (with `tuning` configured) a hyperparameter tuning job
whose best training job's model is the output, or, when an earlier run had exactly the same inputs, no job
at all (a cache hit: the earlier run's model and outputs, and a record that points at it).

What it guarantees, with invocations delivered at least once, a crash possible between any two calls, and
any call possibly applied while the caller sees an error:

- **At most one job per pipeline execution.** The job's name comes from the execution id (a tuning job's
  from a hash of it, as its name has at most 32 characters); `ResourceInUse` means this execution created
  it already, and the action carries on with it.
- **One data version and one cache decision per execution.** The first invocation lists the data, reads
  each object's checksum, decides whether an earlier Completed run with the same key is reused, and writes
  all of it into the manifest next to the model (only if none exists); every retry reads it back, so the
  job, its tags and the record agree, and an execution never both reuses a run and starts a job.
- **A cache hit starts nothing.** The action succeeds with the reused run's output variables, and the
  execution's record (a conditional write) is marked `cache_hit_of` the reused run.
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

from pipeline_common import audit, aws, data_version, training_cache, training_job
from pipeline_common.errors import BadInputError, TrainingJobError
from pipeline_common.pipeline_action import (
    ActionResult,
    failure_type_for,
    parameters,
    put_result,
)
from pipeline_common.settings import StartTrainingSettings
from pipeline_common.training_job import KIND_TRAINING, KIND_TUNING, JobParameters

logger = logging.getLogger(__name__)

REQUIRED_PARAMETERS = ("image_uri", "commit_id", "branch", "repo", "pipeline_execution_id")
OPTIONAL_PARAMETERS = ("image_digest", "trigger", "retrain")
DEFAULT_TRIGGER = "push"
TOKEN_VERSION = 3
PHASE_START = "start"  # the job may not exist yet: repeat the (idempotent) start
PHASE_WAIT = "wait"  # the job exists: describe it
ENDED_EXECUTION = frozenset({"Failed", "Stopped", "Stopping", "Superseded", "Cancelled", "Succeeded"})
NOT_FOUND = ("ValidationException", "ResourceNotFound")


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
        retrain=training_cache.wants_retrain(values["retrain"]),
    )


@dataclass(frozen=True)
class Token:
    job_name: str
    phase: str = PHASE_WAIT
    data_version: str = ""
    kind: str = KIND_TRAINING  # what job_name names: a training job or a tuning job


def encode_token(token: Token) -> str:
    return json.dumps(
        {
            "v": TOKEN_VERSION,
            "job_name": token.job_name,
            "phase": token.phase,
            "data_version": token.data_version,
            "kind": token.kind,
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
    kind = decoded.get("kind", KIND_TRAINING)  # tokens from before tuning name training jobs
    if kind not in (KIND_TRAINING, KIND_TUNING):
        raise BadInputError(f"continuation token has an unknown kind {kind!r}")
    return Token(name, phase, str(decoded.get("data_version", "")), kind)


# -- the audit record ---------------------------------------------------------------------------------------
def first_record(
    settings: StartTrainingSettings,
    params: JobParameters,
    data: data_version.DataVersion,
    name: str,
    description: Mapping[str, Any] | None,
    job_arn: str | None,
    plan: training_cache.Plan,
    kind: str = KIND_TRAINING,
) -> dict[str, Any]:
    config = settings.training
    now = audit.now_iso()
    created = audit.iso_from_millis((description or {}).get("CreationTime")) or now
    versions = data.version_ids
    arn_field = "HyperParameterTuningJobArn" if kind == KIND_TUNING else "TrainingJobArn"
    return {
        "job_name": name,
        "kind": kind,
        "job_arn": job_arn or (description or {}).get(arn_field),
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
        "keep_alive_seconds": config.keep_alive_seconds or None,
        "tuning": config.tuning.as_record() if kind == KIND_TUNING and config.tuning else None,
        "cache_key": plan.cache_key,
        "cache_decision": plan.reason,
        "pipeline_name": settings.pipeline_name,
        "pipeline_execution_id": params.pipeline_execution_id,
        "trigger": params.trigger,
        "created_at": created,
        "updated_at": now,
    }


def cache_hit_record(
    settings: StartTrainingSettings,
    params: JobParameters,
    data: data_version.DataVersion,
    name: str,
    plan: training_cache.Plan,
) -> dict[str, Any]:
    """This execution's record when it reuses an earlier run: terminal at once (no job, no events), its own
    commit, data versions and trigger, and the reused run's model, metrics, model meta and name
    (`cache_hit_of`)."""
    reused = dict(plan.reuse or {})
    now = audit.now_iso()
    record = first_record(
        settings, params, data, name, None, None, plan, str(reused.get("kind") or KIND_TRAINING)
    )
    record.update(
        job_arn=None,
        status="Completed",
        status_rank=audit.STATUS_RANK["Completed"],
        secondary_status="CacheHit",
        cache_hit_of=reused.get("job_name"),
        model_artifact=reused.get("model_artifact"),
        metrics=reused.get("metrics"),
        model_meta=reused.get("model_meta"),
        best_training_job=reused.get("best_training_job"),
        objective_metric=reused.get("objective_metric"),
        objective_value=reused.get("objective_value"),
        started_at=now,
        ended_at=now,
        billable_seconds=0,
        training_seconds=0,
    )
    return record


# -- the two steps -------------------------------------------------------------------------------------------
def _artifact_exists(uri: str) -> bool:
    """The reused model must still be there (a lifecycle rule or a person may have deleted it)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not key:
        return False
    try:
        aws.client("s3").head_object(Bucket=bucket, Key=key)
        return True
    except Exception as error:
        if aws.error_code(error) in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
            return False
        raise


def plan_run(
    settings: StartTrainingSettings, params: JobParameters, data: data_version.DataVersion
) -> dict[str, Any]:
    """The cache decision, made once per execution (it is written into the manifest with the data)."""
    key = training_cache.cache_key(params.image_digest, data, settings.training)
    plan = training_cache.decide(
        settings.audit_table_name, key, settings.training.cache, params.retrain, _artifact_exists
    )
    logger.info("training cache: %s", plan.reason, extra={"cache_key": key})
    return plan.as_document()


def start(settings: StartTrainingSettings, params: JobParameters, name: str, kind: str) -> ActionResult:
    """Pin the data and the cache decision, then reuse a run or create the job (or find it), and write the
    first record: idempotent as a whole."""
    pinned = data_version.pin(
        settings.data_bucket,
        settings.data_prefix,
        settings.model_bucket,
        training_job.manifest_key(settings, name),
        plan=lambda data: plan_run(settings, params, data),
    )
    data, plan = pinned.version, training_cache.Plan.from_document(pinned.plan)
    if plan.reuse is not None:
        return reuse(settings, params, data, name, plan)
    if kind == KIND_TUNING:
        job_arn, description = _create_tuning_job(settings, params, data, name)
    else:
        job_arn, description = _create_training_job(settings, params, data, name)
    if not audit.create_record(
        settings.audit_table_name,
        first_record(settings, params, data, name, description, job_arn, plan, kind),
    ):
        logger.info("audit record for %s existed already; filled in missing fields", name)
    what = "Tuning job" if kind == KIND_TUNING else "Training job"
    summary = f"{what} {name} started (data v{data.manifest_hash}; {plan.reason})"
    return ActionResult(
        "continue", name, summary, token=encode_token(Token(name, PHASE_WAIT, data.manifest_hash, kind))
    )


def _create_training_job(
    settings: StartTrainingSettings, params: JobParameters, data: data_version.DataVersion, name: str
) -> tuple[str | None, dict[str, Any] | None]:
    request = training_job.create_request(settings, params, data, name)
    sagemaker = aws.client("sagemaker")
    try:
        job_arn = sagemaker.create_training_job(**request).get("TrainingJobArn")
        logger.info(
            "created training job %s", name, extra={"job_name": name, "data_version": data.manifest_hash}
        )
        return job_arn, None
    except Exception as error:
        if aws.error_code(error) != "ResourceInUse":
            raise
    # A retried invocation, or a create applied while its caller saw an error: the job is this execution's.
    description = sagemaker.describe_training_job(TrainingJobName=name)
    logger.info(
        "training job %s already exists (%s); carrying on", name, description.get("TrainingJobStatus")
    )
    return description.get("TrainingJobArn"), description


def _create_tuning_job(
    settings: StartTrainingSettings, params: JobParameters, data: data_version.DataVersion, name: str
) -> tuple[str | None, dict[str, Any] | None]:
    request = training_job.tuning_request(settings, params, data, name)
    sagemaker = aws.client("sagemaker")
    try:
        job_arn = sagemaker.create_hyper_parameter_tuning_job(**request).get("HyperParameterTuningJobArn")
        logger.info(
            "created tuning job %s", name, extra={"job_name": name, "data_version": data.manifest_hash}
        )
        return job_arn, None
    except Exception as error:
        if aws.error_code(error) != "ResourceInUse":
            raise
    description = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    logger.info(
        "tuning job %s already exists (%s); carrying on",
        name,
        description.get("HyperParameterTuningJobStatus"),
    )
    return description.get("HyperParameterTuningJobArn"), description


def reuse(
    settings: StartTrainingSettings,
    params: JobParameters,
    data: data_version.DataVersion,
    name: str,
    plan: training_cache.Plan,
) -> ActionResult:
    """A cache hit: no job; the record marked as a hit of the reused run; that run's outputs."""
    reused = dict(plan.reuse or {})
    if not audit.create_record(
        settings.audit_table_name, cache_hit_record(settings, params, data, name, plan)
    ):
        logger.info("cache-hit record for %s existed already", name)
    outputs = training_job.outputs_of_record(reused)
    logger.info("cache hit: %s reuses %s", name, reused.get("job_name"), extra={"outputs": outputs})
    summary = (
        f"Cache hit: no training; reused {reused.get('job_name')} (same image, data content, hyperparameters and "
        f"training config): {outputs['MODEL_ARTIFACT']}"
    )
    return ActionResult("succeeded", name, summary, outputs)


def check(token: Token) -> ActionResult:
    if token.kind == KIND_TUNING:
        return check_tuning(token)
    name = token.job_name
    try:
        description = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    except Exception as error:
        code = aws.error_code(error)
        if code in NOT_FOUND:
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
        outputs = training_job.output_variables(KIND_TRAINING, name, artifact)
        return ActionResult("succeeded", name, f"Training job {name} completed: {artifact}", outputs)
    if status in audit.TERMINAL_STATUSES:
        reason = str(description.get("FailureReason") or "no FailureReason given")
        return ActionResult("failed", name, f"Training job {name} {status}: {reason}")
    raise TrainingJobError(f"training job {name} has an unknown status {status!r}")


def check_tuning(token: Token) -> ActionResult:
    """The tuning job's state; when it Completed, its best training job's model is the output."""
    name = token.job_name
    sagemaker = aws.client("sagemaker")
    try:
        description = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    except Exception as error:
        code = aws.error_code(error)
        if code in NOT_FOUND:
            raise TrainingJobError(
                f"tuning job {name} from the continuation token does not exist ({code}: {error})"
            ) from error
        raise
    status = str(description.get("HyperParameterTuningJobStatus", ""))
    counters = description.get("TrainingJobStatusCounters") or {}
    progress = f"{counters.get('Completed', 0)} of {description['HyperParameterTuningJobConfig']['ResourceLimits']['MaxNumberOfTrainingJobs']} trials completed"
    if status in audit.RUNNING_STATUSES:
        return ActionResult(
            "continue", name, f"Tuning job {name}: {status} ({progress})", token=encode_token(token)
        )
    if status == "Completed":
        best = description.get("BestTrainingJob") or {}
        best_name = str(best.get("TrainingJobName") or "")
        if not best_name:
            return ActionResult(
                "failed", name, f"Tuning job {name} completed without a best training job ({progress})"
            )
        best_description = sagemaker.describe_training_job(TrainingJobName=best_name)
        artifact = str((best_description.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""))
        objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        outputs = training_job.output_variables(KIND_TUNING, name, artifact, best_name)
        message = (
            f"Tuning job {name} completed ({progress}); best {best_name} with "
            f"{objective.get('MetricName')}={objective.get('Value')}: {artifact}"
        )
        return ActionResult("succeeded", name, message, outputs)
    if status in audit.TERMINAL_STATUSES:
        reason = str(description.get("FailureReason") or "no FailureReason given")
        return ActionResult("failed", name, f"Tuning job {name} {status} ({progress}): {reason}")
    raise TrainingJobError(f"tuning job {name} has an unknown status {status!r}")


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
            if token is None:
                kind = KIND_TUNING if settings.training.tuning else KIND_TRAINING
                token = Token(run_name(settings, params, kind), PHASE_START, kind=kind)
            result = start(settings, params, token.job_name, token.kind)
        else:
            result = check(token)
    except Exception as error:
        result = _outcome_of_error(error, settings, token)
    if result.outcome == "failed" and settings is not None and result.job_name:
        stop_if_running(result.job_name, token.kind if token else KIND_TRAINING)
    report(job_id, result, settings, params, token.kind if token else KIND_TRAINING)
    return result


def run_name(settings: StartTrainingSettings, params: JobParameters, kind: str) -> str:
    """The execution's job name: a training job's, or a tuning job's (at most 32 characters)."""
    if kind == KIND_TUNING:
        return training_job.tuning_job_name(settings.job_name_prefix, params.pipeline_execution_id)
    return training_job.job_name(settings.job_name_prefix, params.pipeline_execution_id)


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


def stop_if_running(name: str, kind: str = KIND_TRAINING) -> None:
    """Stop this execution's job if it is still running; best effort (the failure is reported either way).
    Stopping a tuning job stops the training jobs it launched."""
    sagemaker = aws.client("sagemaker")
    try:
        if kind == KIND_TUNING:
            status = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name).get(
                "HyperParameterTuningJobStatus"
            )
            if status == "InProgress":
                sagemaker.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
                logger.warning("stopped tuning job %s: its pipeline action failed", name)
            return
        status = sagemaker.describe_training_job(TrainingJobName=name).get("TrainingJobStatus")
        if status == "InProgress":
            sagemaker.stop_training_job(TrainingJobName=name)
            logger.warning("stopped training job %s: its pipeline action failed", name)
    except Exception as error:
        if aws.error_code(error) not in NOT_FOUND:  # no job: nothing to stop
            logger.warning("could not stop %s job %s: %s", kind, name, error)


# -- CodePipeline results --------------------------------------------------------------------------------------
def report(
    job_id: str,
    result: ActionResult,
    settings: StartTrainingSettings | None,
    params: JobParameters | None,
    kind: str = KIND_TRAINING,
) -> None:
    if put_result(job_id, result):
        return
    # The job had a result already: if the execution has ended meanwhile, nothing may keep training for it.
    if settings is not None and params is not None and result.job_name and _execution_ended(settings, params):
        stop_if_running(result.job_name, kind)


def _execution_ended(settings: StartTrainingSettings, params: JobParameters) -> bool:
    try:
        execution = aws.client("codepipeline").get_pipeline_execution(
            pipelineName=settings.pipeline_name, pipelineExecutionId=params.pipeline_execution_id
        )
    except Exception as error:
        logger.warning("could not read pipeline execution %s: %s", params.pipeline_execution_id, error)
        return False
    return execution["pipelineExecution"].get("status") in ENDED_EXECUTION
