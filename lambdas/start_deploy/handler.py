"""start-deploy: an approval (SageMaker Model Package State Change, EventBridge) → one execution of the
deploy pipeline for that package.

Thin: parse the event, start (`starting`, whose docstring states the guarantees). A malformed event is
logged and raised, so Lambda retries and then dead-letters it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger, correlation_paths
from pipeline_common.errors import BadInputError, ConfigurationError

from start_deploy import starting

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "start-deploy")


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        approval = starting.parse_event(event)
    except BadInputError as error:
        logger.error("malformed approval event, nothing started: %s", error, extra={"event": event})
        raise
    result = starting.start(
        approval,
        group=_env("MODEL_PACKAGE_GROUP_NAME"),
        pipeline=_env("DEPLOY_PIPELINE_NAME"),
        bucket=_env("REQUEST_BUCKET"),
        key=_env("REQUEST_KEY"),
    )
    logger.info("approval of %s: %s", approval.package_arn, result["outcome"], extra=result)
    return result
