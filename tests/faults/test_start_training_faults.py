"""start-training (with record-status beside it) under seeded faults (issue 9 B2, C): throttling, 5xx,
dropped connections, calls applied while the caller sees an error, and sandbox crashes, at random call
points of both functions. Each trial is one pipeline execution's Train action, run the way CodePipeline
runs it (a job per invocation chain, continuation tokens, Lambda's retries, a job without a result times
out), then the platform's redrives. Invariants:

- one training job per pipeline execution;
- no running job behind a failed action;
- the action's outcome is the job's (Completed ⇒ succeeded with its model, failed job ⇒ failed with its reason);
- the final record status is the job's real status;
- the terminal email is never lost, and no stale email.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import time_machine
from pipeline_common import audit, aws

from mlpipe.local.faults import ALL_KINDS, FaultInjector, FaultPlan
from tests.faults.platform import AsyncLambda, Clock
from tests.lambda_fixtures import Lambdas, VirtualBackoff
from tests.lambdas.builders import user_parameters

TRIALS = 200
FAULT_RATE = 0.06
MAX_FAULTS = 3
POLL_SECONDS = 60  # CodePipeline re-invokes a continued action after about this long
MAX_JOBS = 30


def run_action(
    lambdas: Lambdas, execution: str, clock: Clock, start: AsyncLambda, record: AsyncLambda
) -> Any:
    """The Train action as CodePipeline runs it; None when a job got no result (the action timed out)."""
    parameters = user_parameters(execution)
    for _ in range(MAX_JOBS):
        event = lambdas.codepipeline.new_job(execution, "start-training", parameters)
        start.deliver(event)
        while lambdas.events:
            record.deliver(lambdas.events.pop(0))
        result = lambdas.codepipeline.result(event["CodePipeline.job"]["id"])
        if result is None:
            lambdas.codepipeline.time_out(event["CodePipeline.job"]["id"])
            return None
        if not result.succeeded or not result.continuation_token:
            return result
        clock.advance(POLL_SECONDS)
    raise AssertionError(f"the action did not end within {MAX_JOBS} jobs")


def test_start_training_keeps_its_guarantees_under_faults(lambdas: Lambdas, backoff: VirtualBackoff) -> None:
    injector = FaultInjector()
    violations: list[str] = []
    injected = Counter[str]()
    outcomes = Counter[str]()
    started = time.perf_counter()
    with aws.client_hooks(injector.install):
        for seed in range(TRIALS):
            rng = random.Random(seed)
            lambdas.training.outcome = "ok" if rng.random() < 0.8 else "fail"
            lambdas.training.polls = rng.randint(0, 3)
            launched_before = len(lambdas.training.started)
            execution = lambdas.codepipeline.start_execution("StartPipelineExecution", f"trial {seed}")
            plan = FaultPlan(seed=seed, rate=FAULT_RATE, kinds=ALL_KINDS, max_faults=MAX_FAULTS)
            injector.plan = plan
            with time_machine.travel(time.time(), tick=True) as traveller:
                clock = Clock(traveller)
                start = AsyncLambda(lambda event, request_id: lambdas.start(event, request_id), clock)
                record = AsyncLambda(lambda event, request_id: lambdas.record(event, request_id), clock)
                result = run_action(lambdas, execution, clock, start, record)
                plan.enabled = False
                start.redrive()  # a failed start-training invocation, replayed from its DLQ
                finish_job(lambdas, execution, record)
                record.redrive()
            injected.update(f.kind for f in plan.injected)
            outcomes["timed out" if result is None else "succeeded" if result.succeeded else "failed"] += 1
            problem = check(lambdas, execution, result, len(lambdas.training.started) - launched_before)
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}; errors: {start.errors[:2]}")
    elapsed = time.perf_counter() - started
    print(
        f"\nstart-training: {TRIALS} trials in {elapsed:.1f} s, actions {dict(outcomes)}, faults {dict(injected)}"
    )
    assert sum(injected.values()) >= TRIALS, "faults were injected (about one or more per trial)"
    assert violations == []


def finish_job(lambdas: Lambdas, execution: str, record: AsyncLambda) -> None:
    """Let the job run to its end (if it still runs) and deliver its events: the record must end right."""
    name = lambdas.job_name(execution)
    try:
        for _ in range(10):
            if (
                lambdas.sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
                in audit.TERMINAL_STATUSES
            ):
                break
    except Exception:
        return  # no job: nothing to finish
    while lambdas.events:
        record.deliver(lambdas.events.pop(0))


def check(lambdas: Lambdas, execution: str, result: Any, jobs_launched: int) -> str | None:
    name = lambdas.job_name(execution)
    if jobs_launched > 1:
        return f"{jobs_launched} training jobs for one pipeline execution"
    try:
        job = lambdas.sagemaker.job(name)
    except Exception:
        return None if result is None or not result.succeeded else "the action succeeded without a job"
    if lambdas.codepipeline.executions[execution].status == "Failed" and job.status == "InProgress":
        return "a training job still runs behind a failed action"
    if result is not None and result.succeeded and job.status != "Completed":
        return f"the action succeeded but the job is {job.status}"
    if result is not None and not result.succeeded and job.status == "Completed":
        return f"the action failed ({result.failure_message[:120]}) but the job Completed"
    if (
        result is not None
        and result.succeeded
        and result.output_variables.get("MODEL_ARTIFACT") != job.model_artifact
    ):
        return "the action's MODEL_ARTIFACT is not the job's model"
    record = lambdas.emulated.get_record(lambdas.table, name)
    if record is None or record.get("status") != job.status:
        return f"final record status {record and record.get('status')!r}, the job is {job.status}"
    emails = [e["attributes"]["status"] for e in lambdas.emulated.read_inbox(lambdas.inbox)]
    if job.status not in emails:
        return f"the {job.status} email was lost (emails: {emails})"
    ranks = [audit.STATUS_RANK[status] for status in emails]
    if ranks != sorted(ranks):
        return f"a stale email (emails: {emails})"
    return None
