"""evaluate-model: the CodePipeline Lambda invoke action of the Evaluate stage (the quality gate).

Thin: read the job id and the user parameters from the event, hand them to `evaluation.handle`, which
judges the new model against the approved one and the floor and reports exactly one result (its docstring
states what it guarantees under retries and faults).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.code_pipeline_job_event import CodePipelineJobEvent
from pipeline_common.pipeline_action import require_job_id, user_parameters_of

from evaluate_model import evaluation

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "evaluate-model")


@logger.inject_lambda_context(correlation_id_path='"CodePipeline.job".id')
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = require_job_id(event, "evaluate-model")
    result = evaluation.handle(job_id, user_parameters_of(CodePipelineJobEvent(event)))
    logger.info(result.message, extra={"outcome": result.outcome, "job_name": result.job_name})
    return result.as_dict()
