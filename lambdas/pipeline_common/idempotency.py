"""Powertools idempotency keyed on an EventBridge event's id: an exact redelivery returns the first result
without touching anything. An optimisation only: the handlers' conditional writes keep them right without
it, so when its table is unavailable the event is applied anyway."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline_common import aws

logger = logging.getLogger(__name__)

TTL_SECONDS = 24 * 3600


def once_per_event(
    event: dict[str, Any], table_name: str, context: Any, process: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """`process()` once per event id ('' table_name: every time). Powertools is imported on first use (it
    pulls in boto3)."""
    if not table_name:
        return process()
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

    persistence = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=aws.client("dynamodb"))
    config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=TTL_SECONDS)
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    @idempotent_function(data_keyword_argument="event", persistence_store=persistence, config=config)
    def apply_once(event: dict[str, Any]) -> dict[str, Any]:
        return process()

    try:
        return apply_once(event=event)
    except IdempotencyPersistenceLayerError as error:
        logger.warning("idempotency table unavailable (%s); applying the event without it", error)
        return process()


def once_per_invocation_of_event(
    event: dict[str, Any],
    table_name: str,
    context: Any,
    event_id: str,
    process: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """`process(invocation_id)` once per event id. Lambda's retries of one asynchronous invocation keep its
    request id, so the id lets an email lease tell its own invocation's retry from another invocation."""
    invocation_id = str(getattr(context, "aws_request_id", "") or event_id)
    return once_per_event(event, table_name, context, lambda: process(invocation_id))
