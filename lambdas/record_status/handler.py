"""record-status: SageMaker Training Job and HyperParameter Tuning Job State Change (EventBridge) → audit
record + one email per transition (none for the trials of a tuning job).

Thin: validate the event, then apply it (`recording`, whose docstring states the guarantees). The
conditional updates in `pipeline_common.audit` are what keep it right under duplicates, disorder and
faults; Powertools idempotency on the event id (when IDEMPOTENCY_TABLE_NAME is set) short-circuits exact
redeliveries before they touch the audit table. A malformed event is logged and raised, so Lambda retries
and then dead-letters it; nothing is written for it. Any other error is raised too, for the same retries.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger, correlation_paths
from aws_lambda_powertools.utilities.data_classes.event_bridge_event import EventBridgeEvent
from pipeline_common import aws
from pipeline_common.errors import BadInputError
from pipeline_common.settings import RecordStatusSettings

from record_status import recording

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "record-status")

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def _process(
    change: recording.StateChange, settings: RecordStatusSettings, invocation_id: str
) -> dict[str, Any]:
    result = recording.record_and_notify(change, settings, invocation_id)
    logger.info(
        "job %s %s: %s%s",
        change.job_name,
        change.status,
        result["outcome"],
        ", email sent" if result["emailed"] else "",
        extra=result,
    )
    return result


def _process_once(
    event: dict[str, Any], change: recording.StateChange, settings: RecordStatusSettings, context: Any
) -> dict[str, Any]:
    """Powertools idempotency keyed on the event id, imported on first use (it pulls in boto3)."""
    # Lambda's retries of one asynchronous invocation keep its request id: the notification lease knows
    # its own invocation by it.
    invocation_id = str(getattr(context, "aws_request_id", "") or change.event_id)
    if not settings.idempotency_table_name:
        return _process(change, settings, invocation_id)
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

    persistence = DynamoDBPersistenceLayer(
        table_name=settings.idempotency_table_name, boto3_client=aws.client("dynamodb")
    )
    config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=IDEMPOTENCY_TTL_SECONDS)
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    @idempotent_function(data_keyword_argument="event", persistence_store=persistence, config=config)
    def apply_once(event: dict[str, Any]) -> dict[str, Any]:
        return _process(change, settings, invocation_id)

    try:
        return apply_once(event=event)
    except IdempotencyPersistenceLayerError as error:
        # The idempotency table is an optimisation; the conditional update still keeps this exactly-once.
        logger.warning("idempotency table unavailable (%s); applying the event without it", error)
        return _process(change, settings, invocation_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = RecordStatusSettings.from_env()
    try:
        change = recording.parse_event(
            EventBridgeEvent(event) if isinstance(event, dict) else event, settings.pipeline_name
        )
    except BadInputError as error:
        logger.error("malformed state-change event, nothing written: %s", error, extra={"event": event})
        raise
    except recording.NotTracked as error:
        logger.info("not recorded: %s", error)
        return {"job_name": None, "status": None, "outcome": "not-tracked", "emailed": False}
    if not change.job_name.startswith(settings.job_name_prefix):
        logger.info("ignoring job %s: not named %s*", change.job_name, settings.job_name_prefix)
        return {"job_name": change.job_name, "status": change.status, "outcome": "not-ours", "emailed": False}
    return _process_once(dict(event), change, settings, context)
