"""record-deployment: SageMaker Endpoint Deployment State Change and Transform Job State Change
(EventBridge) → the deployment or transform job on the audit record, one email per outcome.

Thin: read the settings, hand the event to `recording.handle_event` (its docstring states the
guarantees). A malformed event is logged and raised, so Lambda retries and then dead-letters it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger, correlation_paths
from pipeline_common.deployments import DeploySettings
from pipeline_common.errors import BadInputError
from pipeline_common.idempotency import once_per_invocation_of_event

from record_deployment import recording

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "record-deployment")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = DeploySettings.from_env()
    try:
        result = once_per_invocation_of_event(
            event,
            "",  # no Powertools layer: the audit's conditional writes and the email lease keep it right
            context,
            str(event.get("id") or ""),
            lambda invocation: recording.handle_event(settings, event, invocation),
        )
    except BadInputError as error:
        logger.error("malformed event, nothing written: %s", error, extra={"event": event})
        raise
    logger.info("%s: %s", event.get("detail-type"), result["outcome"], extra=result)
    return result
