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
from pipeline_common.pipeline_action import require_job_id, user_parameters_of

from start_training import training

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "start-training")


@logger.inject_lambda_context(correlation_id_path='"CodePipeline.job".id')
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = require_job_id(event, "start-training")
    job_event = CodePipelineJobEvent(event)
    result = training.handle(job_id, job_event.data.continuation_token, user_parameters_of(job_event))
    logger.info(result.message, extra={"outcome": result.outcome, "job_name": result.job_name})
    return result.as_dict()
