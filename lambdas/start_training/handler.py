"""start-training: the CodePipeline Lambda invoke action that runs one SageMaker training job.

Thin: read the job id, the continuation token and the user parameters from the event, and hand them to
`training.handle`, which starts or checks the job and reports exactly one result (its docstring states
what it guarantees under retries and faults).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.code_pipeline_job_event import CodePipelineJobEvent
from pipeline_common.errors import BadInputError
from pipeline_common.pipeline_action import job_id_of, user_parameters_of

from start_training import training

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "start-training")


@logger.inject_lambda_context(correlation_id_path='"CodePipeline.job".id')
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = job_id_of(event)
    if job_id is None:
        # Nothing to report a failure to: fail the invocation loudly instead.
        logger.error(
            "not a CodePipeline job event: no CodePipeline.job.id", extra={"event_keys": sorted(event or {})}
        )
        raise BadInputError(
            "start-training expects a CodePipeline job event (CodePipeline.job.id is missing)"
        )
    job_event = CodePipelineJobEvent(event)
    result = training.handle(job_id, job_event.data.continuation_token, user_parameters_of(job_event))
    logger.info(result.message, extra={"outcome": result.outcome, "job_name": result.job_name})
    return result.as_dict()
