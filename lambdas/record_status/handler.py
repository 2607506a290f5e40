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
from pipeline_common.errors import BadInputError
from pipeline_common.idempotency import once_per_invocation_of_event
from pipeline_common.settings import RecordStatusSettings

from record_status import recording

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "record-status")


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
    return once_per_invocation_of_event(
        dict(event),
        settings.idempotency_table_name,
        context,
        change.event_id,
        lambda invocation_id: _process(change, settings, invocation_id),
    )
