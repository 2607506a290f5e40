"""Approval: a person's decision on the registered package, and the run's lineage.

The pipeline itself ends at Register; approval happens on the package, outside it (Studio, the AWS CLI or
`mlpipe-runs approve|reject`), and record-approval hears it through the approval rule. Locally:

- `--approve`: a named local IAM user approves it now, with `mlpipe-runs approve`'s own code and the
  user's own credentials, through the run's gateway: the recorded approver is that user;
- `--approval-wait SECONDS`: the run prints the command that approves it from another terminal (with the
  credentials of a local approver user and `--endpoint-url` of the run's gateway) and waits that long;
- otherwise the run ends at "awaiting approval" and prints the command, as the email does.

With `auto_approve` the package is Approved already. Every case ends with the lineage of the run:
commit → image → data → job → metrics → gate → package → decisions.
"""

from __future__ import annotations

import getpass
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pipeline_common import model_package

from mlpipe.cli import runs
from mlpipe.cli.lineage import lineage, render
from mlpipe.local.console import console, note, warn
from mlpipe.local.iam import APPROVER_ACTIONS, Credentials
from mlpipe.local.stages.actions import deliver_events, handler_faults, show_new_emails
from mlpipe.local.stages.record import read_record
from mlpipe.local.state import RunState

WAIT_POLL_SECONDS = 0.5


def approver_name() -> str:
    """The local approver: a named IAM user, recognisable in the audit trail."""
    user = re.sub(r"[^A-Za-z0-9+=,.@_-]", "-", getpass.getuser() or "someone")
    return f"local-approver-{user}"[:64]


def approve_command(arn: str, gateway_url: str, region: str, credentials: Credentials) -> str:
    script = Path(sys.executable).parent / "mlpipe-runs"
    return " ".join(
        [
            f"AWS_ACCESS_KEY_ID={credentials.access_key_id}",
            f"AWS_SECRET_ACCESS_KEY={shlex.quote(credentials.secret_access_key)}",
            shlex.quote(str(script) if script.exists() else "mlpipe-runs"),
            "approve",
            arn,
            "--reason",
            shlex.quote("<why this model may go to production>"),
            "--endpoint-url",
            gateway_url,
            "--region",
            region,
        ]
    )


def show_lineage(state: RunState) -> dict[str, Any]:
    chain = lineage(state.record)
    (state.work / "lineage.json").write_text(json.dumps(chain, indent=2, sort_keys=True, default=str))
    console.rule("[bold]lineage[/]", characters="-")
    console.print(render(chain), markup=False)
    console.rule(characters="-")
    return chain


def _decision_arrived(state: RunState, arn: str) -> bool:
    return any(
        event.get("detail", {}).get("ModelPackageArn") == arn
        and event.get("detail", {}).get("ModelApprovalStatus") in model_package.DECISIONS
        for event in list(state.events)
    )


def run(state: RunState) -> None:
    cloud, arn = state.need("cloud"), state.need("package_arn")
    status = state.record.get("approval_status")
    if status == model_package.PENDING and state.options.approve:
        approver = cloud.user(approver_name(), APPROVER_ACTIONS)
        sagemaker = approver.session(state.region).client("sagemaker", endpoint_url=cloud.gateway.url)
        reason = f"approved with --approve in a local run by {getpass.getuser()}"
        runs.decide(sagemaker, arn, model_package.APPROVED, reason)
        note(f"approved as {approver.arn}")
    elif status == model_package.PENDING and state.options.approval_wait > 0:
        approver = cloud.user(approver_name(), APPROVER_ACTIONS)
        note(f"waiting up to {state.options.approval_wait:.0f} s for a decision; from another terminal run:")
        console.print(approve_command(arn, cloud.gateway.url, state.region, approver), markup=False)
        deadline = time.monotonic() + state.options.approval_wait
        while time.monotonic() < deadline and not _decision_arrived(state, arn):
            time.sleep(WAIT_POLL_SECONDS)
        if not _decision_arrived(state, arn):
            warn("no decision arrived in time: the package is still awaiting approval")
    elif status == model_package.PENDING:
        note("awaiting approval; the email above has the command. Locally: run with --approve, or with")
        note("--approval-wait SECONDS to approve from another terminal through this run's gateway.")
        note(model_package.approve_command(arn))
    with handler_faults(state):
        deliver_events(state)
    state.record = read_record(state, state.trained_job())
    show_new_emails(state)
    note(f"approval status: {state.record.get('approval_status')}")
    show_lineage(state)
