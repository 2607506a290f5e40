"""golden-test: the CodePipeline Lambda invoke action of the GoldenTest stage.

Thin: read the job id and user parameters, hand them to `testing.handle` (its docstring states the
guarantees), which reports exactly one result.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.code_pipeline_job_event import CodePipelineJobEvent
from pipeline_common.pipeline_action import require_job_id, user_parameters_of

from golden_test import testing

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "golden-test")


@logger.inject_lambda_context(correlation_id_path='"CodePipeline.job".id')
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = require_job_id(event, "golden-test")
    result = testing.handle(job_id, user_parameters_of(CodePipelineJobEvent(event)))
    logger.info(result.message, extra={"outcome": result.outcome, "job_name": result.job_name})
    return result.as_dict()
