"""record-approval: SageMaker Model Package State Change (EventBridge) → the decision on the audit record
and one email per decision.

Thin: validate the event, then apply it (`approval`, whose docstring states the guarantees). Powertools
idempotency on the event id (when IDEMPOTENCY_TABLE_NAME is set) short-circuits exact redeliveries; the
conditional writes keep it right without it. A malformed event is logged and raised, so Lambda retries and
then dead-letters it; nothing is written for it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import Logger, correlation_paths
from pipeline_common.errors import BadInputError
from pipeline_common.idempotency import once_per_invocation_of_event
from pipeline_common.settings import RecordApprovalSettings

from record_approval import approval

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "record-approval")


def _process(
    change: approval.PackageChange, settings: RecordApprovalSettings, invocation_id: str
) -> dict[str, Any]:
    result = approval.record_and_notify(change, settings, invocation_id)
    logger.info(
        "package %s %s: %s%s",
        change.package_arn,
        change.status,
        result["outcome"],
        ", email sent" if result["emailed"] else "",
        extra=result,
    )
    return result


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = RecordApprovalSettings.from_env()
    try:
        change = approval.parse_event(event)
    except BadInputError as error:
        logger.error("malformed model package event, nothing written: %s", error, extra={"event": event})
        raise
    return once_per_invocation_of_event(
        dict(event),
        settings.idempotency_table_name,
        context,
        change.event_id,
        lambda invocation_id: _process(change, settings, invocation_id),
    )
