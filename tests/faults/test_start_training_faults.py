"""start-training (with record-status beside it) under seeded faults (issue 9 B2, C; issue 11 for tuning jobs
and cache hits): throttling, 5xx,
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

import json
import random
import time
from collections import Counter
from typing import Any

import time_machine
from pipeline_common import audit, aws, training_job

from mlpipe.local.faults import ALL_KINDS, FaultInjector, FaultPlan
from stacks.functions import START_TRAINING
from tests.faults.platform import AsyncLambda, Clock
from tests.lambda_fixtures import Lambdas, VirtualBackoff
from tests.lambdas.builders import PREFIX, user_parameters

TRIALS = 200
FAULT_RATE = 0.1  # of request attempts: at least one fault per trial on average (a trial makes ~10-15 calls)
MAX_FAULTS = 3
POLL_SECONDS = 60  # CodePipeline re-invokes a continued action after about this long
MAX_JOBS = 30


def run_action(
    lambdas: Lambdas,
    execution: str,
    clock: Clock,
    start: AsyncLambda,
    record: AsyncLambda,
    retrain: bool = False,
) -> Any:
    """The Train action as CodePipeline runs it; None when a job got no result (the action timed out)."""
    # With `retrain`, RETRAIN as the pipeline variable passes it: the trial starts its own job even though
    # an earlier trial had the same data and image (cache hits are the tuning-and-cache test's).
    parameters = user_parameters(execution, retrain="true" if retrain else "false")
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
                result = run_action(lambdas, execution, clock, start, record, retrain=True)
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


# -- tuning jobs and cache hits ----------------------------------------------------------------------------------
MORE_TRIALS = 60


def tuning_objective(hyperparameters: dict[str, str]) -> dict[str, float]:
    return {"validation:rmse": abs(int(hyperparameters["max_depth"]) - 5) + float(hyperparameters["eta"])}


def test_tuning_and_cache_hits_keep_their_guarantees_under_faults(
    lambdas: Lambdas, backoff: VirtualBackoff, tuning_deployment: Any
) -> None:
    """The same trials with a tuning job instead of a training job (at most one per execution, its best
    model the outcome, its record and terminal email right, no trial email), and with a cache hit (an
    identical run completed before: no job at all, that run's outputs, a cache-hit record, no email)."""
    injector = FaultInjector()
    violations: list[str] = []
    injected = Counter[str]()
    modes = Counter[str]()
    base_config = lambdas.env(START_TRAINING)["TRAINING_CONFIG"]
    started = time.perf_counter()
    with aws.client_hooks(injector.install):
        for seed in range(MORE_TRIALS):
            rng = random.Random(1000 + seed)
            mode = rng.choice(("tuning", "cache hit"))
            modes[mode] += 1
            injector.plan = FaultPlan(enabled=False)
            lambdas.functions.clear()
            # Inputs of this trial's own: an earlier trial's run never matches.
            config = {
                **json.loads(base_config),
                "hyperparameters": {"max_depth": "6", "eta": "0.2", "trial": str(seed)},
            }
            lambdas.env(START_TRAINING)["TRAINING_CONFIG"] = json.dumps(config)
            original = None
            if mode == "tuning":
                lambdas.use_tuning(tuning_deployment)
                lambdas.training.metrics_for = tuning_objective
                lambdas.training.outcome = "ok" if rng.random() < 0.8 else "fail"
            else:
                lambdas.training.metrics_for = None
                lambdas.training.outcome = "ok"
                first = lambdas.codepipeline.start_execution("StartPipelineExecution", f"original {seed}")
                original = lambdas.run_action(user_parameters(first), first)
                assert original.succeeded
            lambdas.training.polls = rng.randint(0, 2)
            lambdas.emulated.read_inbox(lambdas.inbox)
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
                start.redrive()
                if mode == "tuning":
                    finish_tuning_job(lambdas, execution, record)
                record.redrive()
            injected.update(f.kind for f in plan.injected)
            launched = len(lambdas.training.started) - launched_before
            if mode == "tuning":
                problem = check_tuning(lambdas, execution, result, launched)
            else:
                problem = check_cache_hit(lambdas, execution, result, launched, original)
            if problem:
                violations.append(
                    f"seed {seed} {mode} ({plan.injected}): {problem}; errors: {start.errors[:2]}"
                )
    lambdas.functions.clear()
    lambdas.env(START_TRAINING)["TRAINING_CONFIG"] = base_config
    elapsed = time.perf_counter() - started
    print(
        f"\nstart-training, tuning and cache hits: {MORE_TRIALS} trials ({dict(modes)}) in {elapsed:.1f} s, "
        f"faults {dict(injected)}"
    )
    assert violations == []
    assert sum(injected.values()) >= MORE_TRIALS * 0.8, "faults were injected (most trials meet one or more)"


def finish_tuning_job(lambdas: Lambdas, execution: str, record: AsyncLambda) -> None:
    name = training_job.tuning_job_name(PREFIX, execution)
    try:
        for _ in range(40):
            status = lambdas.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
            if status["HyperParameterTuningJobStatus"] in audit.TERMINAL_STATUSES:
                break
    except Exception:
        return  # no tuning job: nothing to finish
    while lambdas.events:
        record.deliver(lambdas.events.pop(0))


def check_tuning(lambdas: Lambdas, execution: str, result: Any, launched: int) -> str | None:
    name = training_job.tuning_job_name(PREFIX, execution)
    try:
        job = lambdas.sagemaker.tuning.job(name)
    except Exception:
        if launched:
            return f"{launched} training jobs without a tuning job"
        return None if result is None or not result.succeeded else "the action succeeded without a tuning job"
    if launched != len(job.trials) or launched > job.max_jobs:
        return f"{launched} training jobs started for a tuning job of {len(job.trials)} trials (max {job.max_jobs})"
    if lambdas.codepipeline.executions[execution].status == "Failed" and job.status == "InProgress":
        return "a tuning job still runs behind a failed action"
    if result is not None and result.succeeded:
        best = job.best()
        if job.status != "Completed" or result.output_variables.get("TRAINING_JOB_NAME") != best:
            return f"the action succeeded with {result.output_variables} but the tuning job is {job.status}, best {best}"
        if result.output_variables.get("MODEL_ARTIFACT") != lambdas.sagemaker.job(best).model_artifact:
            return "the action's MODEL_ARTIFACT is not the best job's model"
    if result is not None and not result.succeeded and job.status == "Completed":
        return f"the action failed ({result.failure_message[:120]}) but the tuning job Completed"
    record = lambdas.emulated.get_record(lambdas.table, name)
    if record is None or record.get("status") != job.status:
        return f"final record status {record and record.get('status')!r}, the tuning job is {job.status}"
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    if {e["attributes"]["job_name"] for e in emails} - {name}:
        return f"a trial sent an email: {[e['attributes']['job_name'] for e in emails]}"
    statuses = [e["attributes"]["status"] for e in emails]
    if job.status not in statuses:
        return f"the {job.status} email was lost (emails: {statuses})"
    if [audit.STATUS_RANK[s] for s in statuses] != sorted(audit.STATUS_RANK[s] for s in statuses):
        return f"a stale email (emails: {statuses})"
    return None


def check_cache_hit(
    lambdas: Lambdas, execution: str, result: Any, launched: int, original: Any
) -> str | None:
    name = lambdas.job_name(execution)
    if launched:
        return f"{launched} training jobs for a cache hit"
    if result is not None and (not result.succeeded or result.output_variables != original.output_variables):
        return f"the action ended {result.succeeded} with {result.output_variables}, not the reused run's outputs"
    record = lambdas.emulated.get_record(lambdas.table, name)
    if record is None or record.get("cache_hit_of") != original.output_variables["TRAINING_JOB_NAME"]:
        return f"no cache-hit record pointing at the reused run: {record}"
    if lambdas.emulated.read_inbox(lambdas.inbox):
        return "a cache hit sent an email"
    return None
