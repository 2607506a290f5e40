"""deploy-model: the CodePipeline Lambda invoke action of the Staging and Production stages.

Thin: read the job id, user parameters and continuation token, hand them to `deploying.handle` (its
docstring states the guarantees), which reports exactly one result.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.code_pipeline_job_event import CodePipelineJobEvent
from pipeline_common.pipeline_action import require_job_id, user_parameters_of

from deploy_model import deploying

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "deploy-model")


@logger.inject_lambda_context(correlation_id_path='"CodePipeline.job".id')
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = require_job_id(event, "deploy-model")
    job = CodePipelineJobEvent(event)
    result = deploying.handle(job_id, user_parameters_of(job), job.data.continuation_token)
    logger.info(result.message, extra={"outcome": result.outcome, "endpoint": result.job_name})
    return result.as_dict()
