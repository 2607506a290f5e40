"""Record and notify: the audit record from the emulated table, and the emails exactly as SNS sent them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from pipeline_common.audit import from_item

from mlpipe.local.console import StageFailed, console, note
from mlpipe.local.emulator import read_sns_inbox
from mlpipe.local.state import RunState
from stacks.functions import RECORD_STATUS


def read_record(state: RunState, job_name: str | None = None) -> dict[str, Any]:
    """The audit record of `job_name` (default: the execution's own run)."""
    job_name = job_name or state.need("job_name")
    table = state.need("deployment").function(RECORD_STATUS.handler).environment["AUDIT_TABLE_NAME"]
    item = state.client("dynamodb").get_item(
        TableName=table, Key={"job_name": {"S": job_name}}, ConsistentRead=True
    )
    if "Item" not in item:
        raise StageFailed(f"no audit record for {job_name}")
    return from_item(item["Item"])


def show_emails(emails: list[dict[str, Any]], work: Path) -> None:
    if not emails:
        raise StageFailed("no notification email was published")
    (work / "emails.json").write_text(json.dumps(emails, indent=2))
    last = emails[-1]
    (work / "email.txt").write_text(f"Subject: {last['subject']}\n\n{last['body']}\n")
    for email in emails:
        console.rule(f"[bold]email[/] {email['subject']}")
        console.print(email["body"], markup=False)
    console.rule()
    note(f"{len(emails)} email(s); the last saved to {work / 'email.txt'}")


def run(state: RunState) -> None:
    state.record = read_record(state)
    state.emails = read_sns_inbox(state.client("sqs"), state.need("email_inbox"))
    if state.record.get("cache_hit_of") and not state.emails:
        # No job ran, so SageMaker sent no state change and there is no email: the record says what happened.
        note(
            f"cache hit: {state.record['job_name']} reused {state.record['cache_hit_of']} "
            f"({state.record.get('cache_decision')}); no job, no email"
        )
        return
    show_emails(state.emails, state.work)


def show_after_failure(state: RunState) -> None:
    """After a failed stage: what the pipeline recorded and emailed before it stopped, if a job ran."""
    if state.job_name is None or state.email_inbox is None:
        return
    with contextlib.suppress(Exception):
        state.record = state.record or read_record(state)
        state.emails = state.emails or read_sns_inbox(state.client("sqs"), state.email_inbox)
        if state.emails:
            show_emails(state.emails, state.work)
