"""data-trigger: an SQS batch of S3 Object Created events (via EventBridge) → one pipeline execution.

Thin: read the batch with the Powertools SQS data class, coalesce it in `trigger.handle_batch` (whose
docstring states the guarantees), return the partial batch response (`ReportBatchItemFailures`) so only
failed messages are retried and dead-lettered.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent
from pipeline_common.settings import DataTriggerSettings

from data_trigger import trigger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "data-trigger")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # A configuration error fails the whole batch on purpose: every message is retried, then dead-lettered.
    settings = DataTriggerSettings.from_env()
    records = [(record.message_id, record.body) for record in SQSEvent(event).records]
    logger.set_correlation_id(trigger.request_token(message_id for message_id, _ in records))
    result = trigger.handle_batch(records, settings)
    logger.info(
        "batch of %d: %d started, %d duplicates, %d ignored, %d failed, pipeline started: %s",
        len(records),
        len(result.objects),
        len(result.duplicates),
        len(result.ignored),
        len(result.failed),
        result.started,
    )
    return result.response()
