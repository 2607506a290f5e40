"""start-deploy, deploy-model, golden-test and record-deployment under seeded faults: throttling, 5xx,
dropped connections, calls applied while the caller sees an error, and sandbox crashes, ONE per trial at a
seeded request attempt, followed by Lambda's retries and a DLQ redrive (faults gone). Each handler's module
docstring states what it guarantees under at-least-once delivery and a crash or lost response between any
two calls (starting.py, deploying.py, testing.py, recording.py); the trials check exactly those.

A trial is one approval of a new package version (the `SumModel` behind the staging API, so the golden test
passes; in about a third of the trials a model whose production canary fires the 5xx alarm, so SageMaker
rolls it back): its event to start-deploy, delivered at least once; then the deploy pipeline as CodePipeline runs
it (Staging → GoldenTest → Production, a job per invocation chain, continuation tokens, sometimes a second
delivery of the same job event, a job without a result timing out); the endpoints' state changes to
record-deployment, each delivered at least once. Invariants:

- one deploy execution per approval (start-deploy's client request token);
- at most one endpoint update per approval and stage (CreateEndpoint or UpdateEndpoint to that version's
  config), exactly one when the stage's action succeeded; two only in deploy-model's documented gap (its
  invocation lost after a production UpdateEndpoint that SageMaker then rolls back);
- a rolled-back canary fails the Production action naming the alarm, and the endpoint serves the previous
  version;
- one result per CodePipeline job (the stand-in refuses a second, as the service does): every job has its
  result or timed out;
- each outcome (serving in staging, golden test passed, serving in production, rolled back in production)
  is emailed at least once when it happened, and never when it did not; twice only in AWS's own ambiguity (SNS accepted it, then the response was lost or the
  sandbox died before the lease was recorded);
- never an email for a superseded deployment: the previous approval's state-change event, delivered late
  (after this one is serving), sends nothing.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import time_machine
from pipeline_common import aws, deployments, endpoints

from mlpipe.local.codepipeline import JobResult
from mlpipe.local.faults import ALL_KINDS, FaultInjector, FaultPlan
from stacks.functions import DEPLOY_MODEL, GOLDEN_TEST, RECORD_DEPLOYMENT, START_DEPLOY, FunctionSpec
from tests.faults.platform import AsyncLambda, Clock
from tests.faults.test_registry_faults import duplicate_is_forced
from tests.lambda_fixtures import DEPLOY_ENV, DEPLOY_PROJECT, DeployLambdas, VirtualBackoff

TRIALS = 30  # about 70 s with the fixture on a loaded two-core machine
ATTEMPTS = 60  # a trial makes more request attempts than this: its one fault lands inside it
POLL_SECONDS = 60
MAX_JOBS = 20
DUPLICATE_RATE = 0.2
BAD_RATE = 0.35
ERRORS_ALARM, _ = endpoints.alarm_names(
    endpoints.endpoint_name(DEPLOY_PROJECT, DEPLOY_ENV, endpoints.PRODUCTION)
)
STAGES = (
    ("staging", DEPLOY_MODEL, {"stage": endpoints.STAGING}),
    ("golden", GOLDEN_TEST, {}),
    ("production", DEPLOY_MODEL, {"stage": endpoints.PRODUCTION}),
)
SUBJECTS = {  # the outcome's email subject, when the stage succeeded
    "staging": "is serving in staging",
    "golden": "golden test passed on staging",
    "production": "is serving in production",
}


@dataclass
class Trial:
    seed: int
    version: int
    arn: str
    bad: bool  # its production canary fires the 5xx alarm
    results: dict[str, JobResult | None] = field(default_factory=dict)
    emails: list[dict[str, Any]] = field(default_factory=list)
    last_events: list[dict[str, Any]] = field(default_factory=list)  # its endpoints' state changes


def deliver(function: AsyncLambda, event: Any, rng: random.Random) -> None:
    function.deliver(event)
    if rng.random() < DUPLICATE_RATE:
        function.deliver(event)  # at least once: the same event again, a new invocation


def record_events(d: DeployLambdas, record: AsyncLambda, trial: Trial, rng: random.Random) -> None:
    while d.events:
        event = d.events.pop(0)
        trial.last_events.append(event)
        deliver(record, event, rng)


def run_action(
    d: DeployLambdas,
    execution: str,
    spec: FunctionSpec,
    parameters: dict[str, str],
    function: AsyncLambda,
    record: AsyncLambda,
    trial: Trial,
    clock: Clock,
    rng: random.Random,
) -> JobResult | None:
    """An action as CodePipeline runs it; None when a job got no result (the action timed out)."""
    for _ in range(MAX_JOBS):
        event = d.codepipeline.new_job(execution, spec.construct_id, parameters)
        deliver(function, event, rng)
        record_events(d, record, trial, rng)
        job_id = event["CodePipeline.job"]["id"]
        result = d.codepipeline.result(job_id)
        if result is None:
            d.codepipeline.time_out(job_id)
            return None
        if not result.succeeded or not result.continuation_token:
            return result
        clock.advance(POLL_SECONDS)
    raise AssertionError(f"the {spec.construct_id} action did not end within {MAX_JOBS} jobs")


def run_trial(
    d: DeployLambdas, seed: int, injector: FaultInjector, clock: Clock, rng: random.Random
) -> tuple[Trial, FaultPlan, list[str]]:
    injector.plan = FaultPlan(enabled=False)
    arn = d.package(f"mlpipe-test-fault-{seed}")
    trial = Trial(seed, int(arn.rsplit("/", 1)[1]), arn, bad=rng.random() < BAD_RATE)
    if trial.bad:
        d.bad_versions[trial.version] = ERRORS_ALARM
    plan = FaultPlan(seed=seed, at={rng.randrange(ATTEMPTS): rng.choice(ALL_KINDS)})
    injector.plan = plan
    functions = {
        spec.handler: AsyncLambda(lambda e, r, spec=spec: d.invoke(spec, e, r), clock)
        for spec in (START_DEPLOY, DEPLOY_MODEL, GOLDEN_TEST, RECORD_DEPLOYMENT)
    }
    record = functions[RECORD_DEPLOYMENT.handler]
    deliver(functions[START_DEPLOY.handler], d.approval_event(arn, f"approval-{seed}"), rng)
    if not executions_of(d, arn):
        plan.enabled = False
        functions[START_DEPLOY.handler].redrive()  # the approval from the DLQ, once the fault is gone
    for execution in executions_of(d, arn)[:1]:
        for stage, spec, parameters in STAGES:
            result = run_action(
                d,
                execution,
                spec,
                {**parameters, "package_arn": arn, "pipeline_execution_id": execution},
                functions[spec.handler],
                record,
                trial,
                clock,
                rng,
            )
            trial.results[stage] = result
            if result is None or not result.succeeded:
                break
    plan.enabled = False
    for function in functions.values():
        function.redrive()
    record_events(d, record, trial, rng)
    trial.emails = d.emails()
    return trial, plan, [e for f in functions.values() for e in f.errors]


def executions_of(d: DeployLambdas, arn: str) -> list[str]:
    return [e.id for e in d.codepipeline.executions.values() if e.variables.get("PACKAGE_ARN") == arn]


def endpoint_updates(d: DeployLambdas, stage: str, version: int) -> int:
    name = endpoints.endpoint_name(DEPLOY_PROJECT, DEPLOY_ENV, stage)
    return sum(
        1
        for operation, params in d.endpoints.accepted
        if operation in ("CreateEndpoint", "UpdateEndpoint")
        and params["EndpointName"] == name
        and params["EndpointConfigName"] == f"{name}-v{version}"
    )


def lost_after_update(plan: FaultPlan) -> bool:
    """Was the fault deploy-model's documented gap: an UpdateEndpoint applied, then the invocation lost
    (the caller saw an error, or the sandbox died right after it)?"""
    for fault in plan.injected:
        if fault.operation == "UpdateEndpoint" and fault.kind in (
            "applied_then_error",
            "applied_then_drop",
            "crash_after",
        ):
            return True
        if (
            fault.kind == "crash_before"
            and fault.index > 0
            and plan.calls[fault.index - 1][1] == "UpdateEndpoint"
        ):
            return True
    return False


def check(d: DeployLambdas, trial: Trial, plan: FaultPlan) -> str | None:
    executions = executions_of(d, trial.arn)
    if len(executions) != 1:
        return f"{len(executions)} deploy executions for one approval"
    for stage in ("staging", "production"):
        updates = endpoint_updates(d, getattr(endpoints, stage.upper()), trial.version)
        result = trial.results.get(stage)
        most = 2 if stage == "production" and trial.bad and lost_after_update(plan) else 1
        if updates > most or (result is not None and result.succeeded and updates != 1):
            return f"{updates} endpoint updates to v{trial.version} in {stage} (action {result})"
    production = trial.results.get("production")
    if trial.bad and production is not None:
        if production.succeeded or f"alarm {ERRORS_ALARM} fired" not in str(production.failure_message):
            return f"the bad canary's action: {production}"
        served = d.endpoints.endpoints[endpoints.endpoint_name(DEPLOY_PROJECT, DEPLOY_ENV, "production")]
        if served.config.endswith(f"-v{trial.version}"):
            return f"production still serves the rolled-back v{trial.version}"
    unresolved = [
        job.id
        for job in d.codepipeline.jobs.values()
        if job.execution_id == executions[0] and job.result is None and not job.timed_out
    ]
    if unresolved:
        return f"jobs without a result: {unresolved}"
    # What happened is what the audit record says (an action that timed out may still have deployed).
    record = d.record(f"mlpipe-test-fault-{trial.seed}")
    status = {
        stage: (record.get(deployments.deployment_attribute(stage, trial.version)) or {}).get("status")
        for stage in (endpoints.STAGING, endpoints.PRODUCTION)
    }
    happened = {
        "staging": status[endpoints.STAGING] == "InService",
        "golden": (record.get(f"golden_test:v{trial.version}") or {}).get("passed") is True,
        "production": status[endpoints.PRODUCTION] == "InService",
        "rollback": status[endpoints.PRODUCTION] == "RolledBack",
    }
    if (
        trial.results.get("production") is not None
        and trial.results["production"].succeeded != happened["production"]
    ):
        return f"the Production action {trial.results['production']} but the record says {status}"
    allowed = 2 if duplicate_is_forced(plan) else 1
    for outcome, subject in {**SUBJECTS, "rollback": "rolled back in production"}.items():
        sent = sum(1 for e in trial.emails if f"v{trial.version} {subject}" in e["subject"])
        if happened[outcome] and not 1 <= sent <= allowed:
            return f"{sent} emails '{subject}' for v{trial.version}"
        if not happened[outcome] and sent:
            return f"{sent} emails '{subject}' for an outcome that did not happen ({status})"
    return None


def test_deploy_handlers_keep_their_guarantees_under_single_faults(
    deploy_lambdas: DeployLambdas, backoff: VirtualBackoff
) -> None:
    d = deploy_lambdas
    injector = FaultInjector()
    violations: list[str] = []
    injected = Counter[str]()
    outcomes = Counter[str]()
    previous: Trial | None = None
    rolled_back = 0
    started = time.perf_counter()
    with aws.client_hooks(injector.install), time_machine.travel(time.time(), tick=True) as traveller:
        clock = Clock(traveller)
        for seed in range(TRIALS):
            rng = random.Random(seed)
            trial, plan, errors = run_trial(d, seed, injector, clock, rng)
            injected.update(f.kind for f in plan.injected)
            rolled_back += int(trial.bad and trial.results.get("production") is not None)
            outcomes[
                ",".join(f"{s}:{'ok' if r and r.succeeded else 'no'}" for s, r in trial.results.items())
            ] += 1
            problem = check(d, trial, plan)
            # Superseded: the previous approval's state changes, delivered late, send nothing now.
            if problem is None and previous is not None and trial.results.get("staging"):
                late = AsyncLambda(lambda e, r: d.invoke(RECORD_DEPLOYMENT, e, r), clock)
                for event in previous.last_events[-2:]:
                    late.deliver(event)
                stale = d.emails()
                if stale:
                    problem = f"a late event of v{previous.version} emailed: {[e['subject'] for e in stale]}"
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}; errors: {errors[:3]}")
            previous = trial
    elapsed = time.perf_counter() - started
    print(f"\ndeploy: {TRIALS} trials in {elapsed:.1f} s, outcomes {dict(outcomes)}, faults {dict(injected)}")
    assert sum(injected.values()) == TRIALS, "every trial met its fault"
    assert rolled_back >= 3, "bad canaries were deployed and rolled back under faults"
    assert not violations, "\n".join(violations)
