"""What the stages after Source share: CodePipeline's Lambda invoke actions, EventBridge delivery, the
emails as SNS sent them, and seeded faults (`--faults`).

- `run_action`: an action as CodePipeline runs it: the local CodePipeline hands out a job (each
  continuation is a new job carrying the token) and takes its one result; the handler runs under its own
  role, through the gateway, as Lambda's asynchronous invocation (an error is retried twice, same event).
- `deliver_events`: every event the stand-ins emitted (training job and model package state changes) goes
  to the functions the synthesized EventBridge rules name (`mlpipe.local.eventbus`): an event no rule
  matches reaches nothing, as in AWS.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline_common import aws as lambda_aws
from rich.markup import escape

from mlpipe.local.cloud import LocalCloud
from mlpipe.local.codepipeline import JobResult, LocalCodePipeline
from mlpipe.local.console import StageFailed, console, note, warn
from mlpipe.local.deployment import LocalFunction
from mlpipe.local.emulator import read_sns_inbox
from mlpipe.local.faults import TRANSIENT, FaultInjector, FaultPlan
from mlpipe.local.state import RunState

ASYNC_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
FAULT_RATE = 0.08  # of the handlers' request attempts, with --faults
MAX_JOBS = 10_000  # an action that never ends is a bug: stop instead of looping forever


def invoke_async(
    cloud: LocalCloud,
    function: LocalFunction,
    event: dict[str, Any],
    environment: dict[str, str] | None = None,
) -> None:
    """Lambda's asynchronous invocation: an error is retried with the same event, twice."""
    for attempt in range(1, ASYNC_ATTEMPTS + 1):
        try:
            cloud.invoke(function, event, environment)
            return
        except Exception as error:
            warn(
                f"{function.logical_id} invocation {attempt}/{ASYNC_ATTEMPTS} failed: {type(error).__name__}: {error}"
            )
    raise StageFailed(
        f"{function.logical_id} failed {ASYNC_ATTEMPTS} times on the same event (it would go to its DLQ)"
    )


def deliver_events(state: RunState) -> int:
    """Deliver the stand-ins' events through the templates' rules; the number of invocations."""
    invoked = 0
    while state.events:
        event = state.events.pop(0)
        for function in state.need("bus").targets(event):
            invoke_async(state.need("cloud"), function, event)
            invoked += 1
    return invoked


def run_action(
    state: RunState,
    function: LocalFunction,
    user_parameters: dict[str, str],
    environment: dict[str, str] | None = None,
    pipeline: LocalCodePipeline | None = None,
    execution_id: str | None = None,
) -> JobResult:
    """One Lambda invoke action of the run's execution (or of `execution_id` of another `pipeline`), until
    its final result (events delivered after each invocation, as EventBridge would meanwhile)."""
    pipeline = pipeline or state.need("codepipeline")
    execution_id = execution_id or state.need("execution_id")
    cloud = state.need("cloud")
    for _ in range(MAX_JOBS):
        event = pipeline.new_job(execution_id, function.logical_id, user_parameters)
        job_id = event["CodePipeline.job"]["id"]
        invoke_async(cloud, function, event, environment)
        deliver_events(state)
        result = pipeline.result(job_id)
        if result is None:
            pipeline.time_out(job_id)
            raise StageFailed(f"{function.logical_id} returned without a job result: the action times out")
        if not result.succeeded or not result.continuation_token:
            return result  # type: ignore[no-any-return]
        time.sleep(state.options.poll_seconds)
    raise StageFailed(f"{function.logical_id} kept its action open for {MAX_JOBS} jobs")


@contextlib.contextmanager
def handler_faults(state: RunState) -> Iterator[None]:
    """With --faults SEED: seeded transient faults on the handlers' AWS calls inside the block."""
    if state.options.faults_seed is None:
        yield
        return
    if state.fault_plan is None:
        state.fault_plan = FaultPlan(seed=state.options.faults_seed, rate=FAULT_RATE, kinds=TRANSIENT)
    plan = state.fault_plan
    injected_before, attempts_before = len(plan.injected), plan.attempts
    with lambda_aws.client_hooks(FaultInjector(plan).install):
        try:
            yield
        finally:
            kinds = Counter(fault.kind for fault in plan.injected[injected_before:])
            note(
                f"--faults {state.options.faults_seed}: {sum(kinds.values())} of {plan.attempts - attempts_before} "
                f"request attempts failed ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items())) or 'none'})"
            )


def show_new_emails(state: RunState) -> list[dict[str, Any]]:
    """The emails SNS sent since the last look: printed, and added to the run's emails.json."""
    new = read_sns_inbox(state.client("sqs"), state.need("email_inbox"))
    for email in new:
        console.rule(f"[bold]email[/] {escape(str(email['subject']))}", characters="-")
        console.print(email["body"], markup=False)
    state.emails.extend(new)
    if state.emails:  # no file for a run that sent nothing (a cache hit of a decided model, say)
        (state.work / "emails.json").write_text(json.dumps(state.emails, indent=2))
    return new
