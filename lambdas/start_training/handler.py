"""start-training: the CodePipeline Lambda invoke action that runs one SageMaker training job.

Thin: parse the job event, run `training.start` (first invocation) or `training.check` (continuation), and
turn any exception into `put_job_failure_result` with a clear message, never a silent action timeout.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.code_pipeline_job_event import CodePipelineJobEvent
from pipeline_common.errors import BadInputError
from pipeline_common.settings import StartTrainingSettings

from start_training import training

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "start-training")


def _job_id(event: Any) -> str | None:
    job = event.get("CodePipeline.job") if isinstance(event, dict) else None
    job_id = job.get("id") if isinstance(job, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def _run(event: dict[str, Any], job_id: str) -> training.ActionResult:
    job_event = CodePipelineJobEvent(event)
    token = job_event.data.continuation_token
    if token:
        return training.check(job_id, token)
    try:
        parameters = job_event.decoded_user_parameters
    except ValueError as error:
        raise BadInputError(f"UserParameters is not valid JSON: {error}") from None
    return training.start(job_id, parameters, StartTrainingSettings.from_env())


@logger.inject_lambda_context(correlation_id_path='"CodePipeline.job".id')
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = _job_id(event)
    if job_id is None:
        # Nothing to report a failure to: fail the invocation loudly instead.
        logger.error(
            "not a CodePipeline job event: no CodePipeline.job.id", extra={"event_keys": sorted(event or {})}
        )
        raise BadInputError(
            "start-training expects a CodePipeline job event (CodePipeline.job.id is missing)"
        )
    try:
        result = _run(event, job_id)
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        logger.exception(
            "start-training failed; reporting the failure to CodePipeline", extra={"reason": message}
        )
        # If even this call fails, the exception propagates: Lambda logs it and CodePipeline times out.
        training.report_failure(job_id, message, training.failure_type_for(error))
        return training.ActionResult("failed", None, message).as_dict()
    logger.info(result.message, extra={"outcome": result.outcome, "job_name": result.job_name})
    return result.as_dict()
