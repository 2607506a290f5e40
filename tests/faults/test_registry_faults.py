"""evaluate-model, register-model and record-approval under seeded faults: throttling, 5xx, dropped
connections, calls applied while the caller sees an error, and sandbox crashes, ONE per trial at a seeded
request attempt, followed by Lambda's retries and a DLQ redrive. Each handler's module docstring states what
it guarantees under at-least-once delivery, disorder and a crash or lost response between any two calls
(evaluation.py, registration.py, approval.py); the trials check exactly those guarantees.

Evaluate and Register run as CodePipeline runs a Lambda invoke action: a job per invocation chain,
continuation tokens, Lambda's asynchronous retries of the same event, an invocation sometimes delivered
twice, and a job without a result timing out; a person may decide on the package as soon as it exists
(between two invocations of Register, its event delivered at once or late), after the action, or never.
Invariants:

- one gate decision per training job: the evaluation document is written once, and the record's gate is
  the document's;
- the Evaluate action's outcome is the decision's (a failed gate fails it, a passed one succeeds), and every
  CodePipeline job has its one result (the local CodePipeline refuses a second, as the service does);
- at most one model package per training job, and a package only for a passed gate;
- the "awaiting approval" email is sent at least once, and never after a decision on the package;
- the failed-gate email is sent at least once; twice only in AWS's own ambiguity (SNS accepted it, then the
  response was lost or the sandbox died before the handler recorded it).
The seeded trials rarely crash Register right between its steps while a decision comes in; a second test
goes through every call of Register with either crash and a decision before the retry.

record-approval gets the Model Package State Change events of 1 to 3 decisions on a package (built by the
registry stand-in in the published sample's shape), each delivered at least once, in any order and
interleaved with the decisions. Invariants: each decision recorded once, the current status is the newest
decision's, one email for each decision while it is current (twice only in the ambiguity above), and none
for a decision once a newer one has replaced it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import time_machine
from pipeline_common import audit, aws, model_package, quality_gate

from mlpipe.local.codepipeline import JobResult
from mlpipe.local.faults import ALL_KINDS, FaultInjector, FaultPlan
from stacks.functions import EVALUATE_MODEL, REGISTER_MODEL, FunctionSpec
from tests.faults.platform import AsyncLambda, Clock
from tests.lambda_fixtures import Lambdas, VirtualBackoff
from tests.lambdas.builders import COMMIT, IMAGE_DIGEST, IMAGE_URI, PREFIX, user_parameters

# Each test finishes in about a minute on a loaded two-core machine.
TRIALS = 60
POLL_SECONDS = 60  # CodePipeline re-invokes a continued action after about this long
MAX_JOBS = 10
DUPLICATE_RATE = 0.2  # Lambda delivers an asynchronous invocation at least once: sometimes twice
# The faults that can leave an email SNS accepted unrecorded, so that a retry sends it again: a lost
# response to the Publish itself (botocore retries it), or a sandbox that died after it. SNS has no
# deduplication for standard topics: that duplicate is AWS's ambiguity, not the handler's.
AMBIGUOUS = {"applied_then_error", "applied_then_drop", "crash_after"}


def duplicate_is_forced(plan: FaultPlan) -> bool:
    """Was the single fault one that leaves an accepted publish unrecorded?"""
    for fault in plan.injected:
        if fault.service == "sns" and fault.operation == "Publish" and fault.kind in AMBIGUOUS:
            return True
        # The sandbox died on the call right after SNS accepted the email, before it was recorded.
        if (
            fault.kind == "crash_before"
            and fault.index > 0
            and plan.calls[fault.index - 1] == ("sns", "Publish")
        ):
            return True
    return False


# -- evaluate-model and register-model -------------------------------------------------------------------------
# A trial makes 11 or more request attempts when the gate fails (Evaluate alone) and 18 or more when it
# passes (Evaluate, then Register): its fault lands among the first EVALUATE_ATTEMPTS or ALL_ATTEMPTS, so
# every trial meets it. The trial's metric is drawn clear of the gate's limits, so the outcome is known.
EVALUATE_ATTEMPTS = 11
ALL_ATTEMPTS = 18
FLOOR = 0.5  # tests/lambda_fixtures.py's QUALITY_GATE: validation:rmse at most 0.5,
MAX_REGRESSION = 0.02  # and at most 2% worse than the approved model's
PASS_RATE = 0.6


def metric_for(rng: random.Random, baseline: float | None) -> tuple[float, bool]:
    """The trial's validation:rmse (lower is better) and whether the gate passes it: at least 3% away from
    the limit (the floor, or the approved model's value plus the allowed regression)."""
    limit = FLOOR if baseline is None else min(FLOOR, baseline * (1 + MAX_REGRESSION))
    if rng.random() < PASS_RATE:
        return round(rng.uniform(limit * 0.8, limit * 0.97), 4), True
    return round(rng.uniform(limit * 1.03, limit * 1.2), 4), False


EARLY, EARLY_EVENT_LATE = "early", "early, event late"
# The delayed event is the subtle case (only the registry knows of the decision yet): twice as likely.
DECIDE_MODES = (EARLY, EARLY_EVENT_LATE, EARLY_EVENT_LATE, "late", "never")


@dataclass
class Trial:
    """One training job through Evaluate and Register, and what happened around them."""

    seed: int
    execution: str
    name: str
    origin: dict[str, str]  # the Train action's user parameters
    model_artifact: str
    # When a person decides on the package: early (as soon as it exists), with its event delivered at once
    # or only at the end of the trial (EventBridge may be late), after the action (late), or never.
    decide: str
    decision: str | None = None  # the decision made, if any
    emails: list[dict[str, Any] | str] = field(default_factory=list)  # the inbox, with "DECISION" marks


def template_record(lambdas: Lambdas) -> dict[str, Any]:
    """The record of one real Train action (start-training, then record-status), without its emails: each
    trial's record is a copy of it for its own job (a whole Train action per trial would double the time)."""
    execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "template")
    result = lambdas.run_action(user_parameters(execution), execution)
    assert result.succeeded, result.failure_message
    record = lambdas.record_of(result.output_variables["TRAINING_JOB_NAME"])
    lambdas.emulated.read_inbox(lambdas.inbox)
    return {k: v for k, v in record.items() if k not in ("emails_sent", "notified_rank")}


def trained_job(
    lambdas: Lambdas, template: dict[str, Any], seed: int, value: float, rng: random.Random
) -> Trial:
    """A Train action that succeeded: the completed job in SageMaker, with this trial's metrics, and its
    record as start-training and record-status leave it (the metrics and model on it half the time: the
    state-change event may come after Evaluate, which then fills them in)."""
    lambdas.training.metrics = {"validation:rmse": value, "train:rmse": round(value * 0.7, 3)}
    execution = lambdas.codepipeline.start_execution("StartPipelineExecution", f"trial {seed}")
    name = lambdas.job_name(execution)
    lambdas.finished_job(name)
    job = lambdas.sagemaker.job(name)
    record = {
        **template,
        "job_name": name,
        "job_arn": job.arn,
        "pipeline_execution_id": execution,
        "data_manifest": f"s3://{lambdas.model_bucket}/models/{name}/data-manifest.json",
    }
    if rng.random() < 0.5:
        record.update(metrics=dict(lambdas.training.metrics), model_artifact=job.model_artifact)
    else:
        record.pop("metrics", None)
        record.pop("model_artifact", None)
    lambdas.emulated.client("dynamodb").put_item(
        TableName=lambdas.table, Item={k: audit.to_attribute(v) for k, v in record.items()}
    )
    return Trial(
        seed=seed,
        execution=execution,
        name=name,
        origin=user_parameters(execution),
        model_artifact=job.model_artifact,
        decide=rng.choice(DECIDE_MODES),
    )


def run_action(
    lambdas: Lambdas,
    trial: Trial,
    spec: FunctionSpec,
    parameters: dict[str, str],
    function: AsyncLambda,
    clock: Clock,
    rng: random.Random,
) -> JobResult | None:
    """An action as CodePipeline runs it; None when a job got no result (the action timed out)."""
    for _ in range(MAX_JOBS):
        event = lambdas.codepipeline.new_job(trial.execution, spec.construct_id, parameters)
        function.deliver(event)
        if rng.random() < DUPLICATE_RATE:
            function.deliver(event)  # at least once: the same event again, a new invocation
        job_id = event["CodePipeline.job"]["id"]
        result = lambdas.codepipeline.result(job_id)
        if result is None:
            lambdas.codepipeline.time_out(job_id)
            return None
        if not result.succeeded or not result.continuation_token:
            return result
        clock.advance(POLL_SECONDS)
    raise AssertionError(f"the {spec.construct_id} action did not end within {MAX_JOBS} jobs")


def package_of(lambdas: Lambdas, name: str) -> list[dict[str, Any]]:
    return [
        package
        for package in lambdas.registry.packages.values()
        if package["ModelPackageGroupName"] == lambdas.group
        and (package.get("CustomerMetadataProperties") or {}).get(model_package.META_TRAINING_JOB) == name
    ]


def decide(lambdas: Lambdas, trial: Trial, plan: FaultPlan, approver: Any, rng: random.Random) -> None:
    """A person decides on the trial's package, and record-approval records it (both without faults: the
    trial's one fault is for Evaluate and Register). The inbox so far is kept, then a DECISION mark."""
    (package,) = package_of(lambdas, trial.name)
    enabled, plan.enabled = plan.enabled, False
    try:
        trial.emails += lambdas.emulated.read_inbox(lambdas.inbox)
        trial.emails.append("DECISION")
        trial.decision = rng.choice(model_package.DECISIONS)
        approver.update_model_package(
            ModelPackageArn=package["ModelPackageArn"],
            ModelApprovalStatus=trial.decision,
            ApprovalDescription=f"trial {trial.seed}",
        )
        if trial.decide != EARLY_EVENT_LATE:
            lambdas.deliver_package_events()
    finally:
        plan.enabled = enabled


def eager_register(
    lambdas: Lambdas, trial: Trial, plan: FaultPlan, approver: Any, rng: random.Random
) -> Callable[[Any, str], Any]:
    """register-model's invocations, with an eager approver when the trial has one: the person decides the
    moment the package exists, between two invocations of the action (e.g. after a crash between the
    create and the email), as someone watching Studio may."""

    def invoke(event: Any, request_id: str) -> Any:
        if trial.decide.startswith(EARLY) and trial.decision is None and package_of(lambdas, trial.name):
            decide(lambdas, trial, plan, approver, rng)
        return lambdas.invoke(REGISTER_MODEL, event, request_id)

    return invoke


def run_trial(
    lambdas: Lambdas,
    trial: Trial,
    injector: FaultInjector,
    evaluate_plan: FaultPlan,
    register_plan: FaultPlan,
    approver: Any,
    clock: Clock,
    rng: random.Random,
) -> tuple[JobResult | None, JobResult | None, list[str]]:
    """Evaluate, then Register if the gate passed, as CodePipeline runs them, each under its plan; the
    platform's redrives (no faults: the operator redrives once they are gone); the person's decision; the
    delayed events. Returns both actions' results (None: not run, or timed out) and the invocation errors."""
    injector.plan = evaluate_plan
    evaluate = AsyncLambda(lambda event, request_id: lambdas.invoke(EVALUATE_MODEL, event, request_id), clock)
    register = AsyncLambda(eager_register(lambdas, trial, register_plan, approver, rng), clock)
    evaluated = run_action(
        lambdas,
        trial,
        EVALUATE_MODEL,
        {"training_job_name": trial.name, "pipeline_execution_id": trial.execution},
        evaluate,
        clock,
        rng,
    )
    registered = None
    if evaluated is not None and evaluated.succeeded:
        parameters = {k: v for k, v in trial.origin.items() if k != "trigger"}
        parameters.update(
            training_job_name=trial.name,
            model_artifact=trial.model_artifact,
            evaluation_uri=evaluated.output_variables["EVALUATION_URI"],
        )
        injector.plan = register_plan
        registered = run_action(lambdas, trial, REGISTER_MODEL, parameters, register, clock, rng)
    injector.plan.enabled = False
    evaluate.redrive()
    register.redrive()
    if trial.decide != "never" and trial.decision is None and package_of(lambdas, trial.name):
        decide(lambdas, trial, injector.plan, approver, rng)
        # A late duplicate of the action's last invocation, after the decision: no email now.
        last = [
            job
            for job in lambdas.codepipeline.jobs.values()
            if job.execution_id == trial.execution and job.function_name == REGISTER_MODEL.construct_id
        ]
        register.deliver(lambdas.codepipeline.job_event(last[-1].id))
    if trial.decide == EARLY_EVENT_LATE:
        lambdas.deliver_package_events()  # the decision's event, delayed until now
    lambdas.package_events.clear()  # the others' (a creation is no decision: tested below)
    trial.emails += lambdas.emulated.read_inbox(lambdas.inbox)
    return evaluated, registered, evaluate.errors + register.errors


def test_evaluate_and_register_keep_their_guarantees_under_single_faults(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    injector = FaultInjector()
    # A person allowed to decide, with their own SageMaker client (one: a client takes half a second).
    approver = lambdas.sagemaker_as(lambdas.approver())
    violations: list[str] = []
    injected = Counter[str]()
    outcomes = Counter[str]()
    template = template_record(lambdas)
    baseline: float | None = None  # the validation:rmse of the latest approved package
    started = time.perf_counter()
    # One clock for all trials, moved only forward: the packages' creation times keep the trials' order
    # (the gate's baseline is the newest Approved package by creation time).
    with aws.client_hooks(injector.install), time_machine.travel(time.time(), tick=True) as traveller:
        clock = Clock(traveller)
        for seed in range(TRIALS):
            rng = random.Random(seed)
            injector.plan = FaultPlan(enabled=False)
            value, passes = metric_for(rng, baseline)
            trial = trained_job(lambdas, template, seed, value, rng)
            attempts = ALL_ATTEMPTS if passes else EVALUATE_ATTEMPTS
            plan = FaultPlan(seed=seed, at={rng.randrange(attempts): rng.choice(ALL_KINDS)})
            injector.plan = plan

            evaluated, registered, errors = run_trial(
                lambdas, trial, injector, plan, plan, approver, clock, rng
            )
            injected.update(f.kind for f in plan.injected)
            outcomes["timed out" if evaluated is None else "passed" if evaluated.succeeded else "failed"] += 1
            problem = check_evaluate_register(lambdas, trial, evaluated, registered, plan)
            if problem is None and evaluated is not None and evaluated.succeeded != passes:
                problem = f"the gate judged {value} against {baseline}: passed {evaluated.succeeded}"
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}; errors: {errors[:3]}")
            if trial.decision == model_package.APPROVED:
                baseline = value  # the newest approved package: the next trials are judged against it
    elapsed = time.perf_counter() - started
    print(
        f"\nevaluate+register: {TRIALS} trials in {elapsed:.1f} s, gates {dict(outcomes)}, "
        f"faults {dict(injected)}"
    )
    assert violations == []
    assert sum(injected.values()) == TRIALS, "every trial meets its fault"


def test_a_crash_at_each_call_of_register_with_a_decision_before_the_retry(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    """Exhaustive where the seeded trials are thin: the sandbox dies before or after each call of a passing
    model's Register, and the person decides before Lambda's retry, the decision's event delivered at once
    or only later. No "awaiting approval" email after the decision, one package, one result per job."""
    injector = FaultInjector()
    approver = lambdas.sagemaker_as(lambdas.approver())
    template = template_record(lambdas)
    violations: list[str] = []
    baseline: float | None = None
    runs = 0
    with aws.client_hooks(injector.install), time_machine.travel(time.time(), tick=True) as traveller:
        clock = Clock(traveller)

        def trial_with(plan: FaultPlan, mode: str, seed: int) -> None:
            nonlocal baseline, runs
            rng = random.Random(seed)
            limit = FLOOR if baseline is None else min(FLOOR, baseline * (1 + MAX_REGRESSION))
            value = round(limit * 0.9, 4)  # passes the gate
            trial = trained_job(lambdas, template, seed, value, rng)
            trial.decide = mode
            evaluated, registered, errors = run_trial(
                lambdas, trial, injector, FaultPlan(enabled=False), plan, approver, clock, rng
            )
            problem = check_evaluate_register(lambdas, trial, evaluated, registered, plan)
            if problem:
                violations.append(f"{mode}, {plan.injected}: {problem}; errors: {errors[:3]}")
            if trial.decision == model_package.APPROVED:
                baseline = value
            runs += 1

        started = time.perf_counter()
        probe = FaultPlan()
        trial_with(probe, "never", 0)
        calls = list(probe.calls)  # Register's calls, without a fault
        # Before the create there is no package to decide on: the crashes from there on.
        first = calls.index(("sagemaker", "CreateModelPackage"))
        for kind in ("crash_before", "crash_after"):
            for position in range(first, len(calls)):
                for mode in (EARLY, EARLY_EVENT_LATE):
                    trial_with(FaultPlan(at={position: kind}), mode, 1000 + runs)
    elapsed = time.perf_counter() - started
    print(f"\nregister, a crash at each call from the create: {runs} runs in {elapsed:.1f} s")
    assert violations == [], f"Register's calls: {calls}"


def check_evaluate_register(
    lambdas: Lambdas,
    trial: Trial,
    evaluated: JobResult | None,
    registered: JobResult | None,
    plan: FaultPlan,
) -> str | None:
    name = trial.name
    for job in lambdas.codepipeline.jobs.values():
        if job.execution_id == trial.execution and (job.result is None or job.timed_out):
            return f"CodePipeline job {job.id} of {job.function_name} got no result"
    if evaluated is None:
        return "the Evaluate action timed out"
    # One decision: the evaluation document was written once (the model bucket keeps every version).
    key = model_package.evaluation_key("models/", name)
    versions = [
        v
        for v in lambdas.emulated.client("s3")
        .list_object_versions(Bucket=lambdas.model_bucket, Prefix=key)
        .get("Versions", [])
        if v["Key"] == key
    ]
    if len(versions) != 1:
        return f"{len(versions)} versions of the evaluation document"
    document = evaluate_document(lambdas, key)
    gate = document["quality_gate"]
    record = lambdas.record_of(name)
    if record.get("gate") != gate or record.get("gate_status") != gate["status"]:
        return f"the record's gate {record.get('gate')} is not the document's {gate}"
    passed = gate["status"] == quality_gate.PASSED
    if evaluated.succeeded != passed:
        return f"the gate {gate['status']} but the action {'succeeded' if evaluated.succeeded else 'failed'}"
    packages = package_of(lambdas, name)
    if len(packages) > 1 or (packages and not passed):
        return f"{len(packages)} packages for a {gate['status']} gate"
    emails = [e for e in trial.emails if e == "DECISION" or e["attributes"].get("job_name") == name]
    events = [e if isinstance(e, str) else e["attributes"]["event"] for e in emails]
    forced = duplicate_is_forced(plan)
    if not passed:
        failed_gate = events.count("quality-gate")
        if failed_gate == 0 or failed_gate > (2 if forced else 1):
            return f"{failed_gate} failed-gate emails (ambiguous fault: {forced}): {events}"
        if "registration" in events:
            return f"a failed gate's model awaits approval: {events}"
        return None
    if registered is None or not registered.succeeded:
        return f"the gate passed, but Register ended {registered}"
    if len(packages) != 1:
        return "the gate passed, but no package was registered"
    arn = packages[0]["ModelPackageArn"]
    if registered.output_variables.get("MODEL_PACKAGE_ARN") != arn or record.get("model_package_arn") != arn:
        return f"the action ({registered.output_variables}) or the record names another package than {arn}"
    if "quality-gate" in events:
        return f"a failed-gate email for a passed gate: {events}"
    awaiting = events.count("registration")
    decided_at = events.index("DECISION") if "DECISION" in events else len(events)
    if "registration" in events[decided_at:]:
        return f"an 'awaiting approval' email after the decision: {events}"
    if awaiting == 0 and not (trial.decide.startswith(EARLY) and decided_at == 0):
        return f"no 'awaiting approval' email, and no decision came first: {events}"
    if awaiting > (2 if forced else 1):
        return f"{awaiting} 'awaiting approval' emails (ambiguous fault: {forced}): {events}"
    return None


def evaluate_document(lambdas: Lambdas, key: str) -> dict[str, Any]:
    body = lambdas.emulated.client("s3").get_object(Bucket=lambdas.model_bucket, Key=key)["Body"].read()
    return dict(json.loads(body))


# -- record-approval ---------------------------------------------------------------------------------------------
# A trial's events make 12 or more request attempts (the package's creation, then each decision's events):
# the single fault lands among the first 12, so every trial meets it.
APPROVAL_ATTEMPTS = 12
APPROVAL_TRIALS = 60
MAX_DECISIONS = 3
REDELIVERY_RATE = 0.3  # EventBridge delivers an event at least once: sometimes twice
NEW_ID_RATE = 0.1  # ...and then, rarely, as a copy under another event id (past Powertools' idempotency)
DECIDED = "DECIDED"  # a mark in the trial's inbox: emails after it were sent after that decision was made


@dataclass
class ApprovalTrial:
    name: str
    arn: str
    decisions: list[str] = field(default_factory=list)  # decision ids, oldest first
    # Decisions whose event an invocation finished while they were still the newest: they owe an email.
    read_while_current: set[str] = field(default_factory=set)
    inbox: list[dict[str, Any] | tuple[str, int]] = field(default_factory=list)  # emails and DECIDED marks


def package_awaiting_approval(lambdas: Lambdas, seed: int) -> ApprovalTrial:
    """A registered package and its job's record, as register-model leaves them (without faults)."""
    name = f"{PREFIX}approval-{seed}-{uuid.uuid4().hex[:6]}"
    created = lambdas.cloud.client("sagemaker").create_model_package(
        ModelPackageGroupName=lambdas.group,
        ModelPackageDescription=model_package.description(name, COMMIT, "abcdef012345"),
        InferenceSpecification={
            "Containers": [
                {
                    "Image": f"{IMAGE_URI.rsplit(':', 1)[0]}@{IMAGE_DIGEST}",
                    "ModelDataUrl": f"s3://{lambdas.model_bucket}/models/{name}/output/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus=model_package.PENDING,
        CustomerMetadataProperties={model_package.META_TRAINING_JOB: name, model_package.META_COMMIT: COMMIT},
    )
    arn = created["ModelPackageArn"]
    record = {
        "job_name": name,
        "kind": "training",
        "status": "Completed",
        "commit_id": COMMIT,
        "repo": "example-org/ml-build-train-pipeline",
        "branch": "main",
        "data_version": "abcdef012345",
        "metrics": {"validation:rmse": 0.29},
        "gate_status": quality_gate.PASSED,
        "model_package_arn": arn,
        "model_package_version": model_package.parse_package_arn(arn)[1],  # type: ignore[index]
        "model_package_group": lambdas.group,
        "approval_status": model_package.PENDING,
        "emails_sent": {"model-registered"},
    }
    lambdas.emulated.client("dynamodb").put_item(
        TableName=lambdas.table, Item={k: audit.to_attribute(v) for k, v in record.items()}
    )
    return ApprovalTrial(name=name, arn=arn)


def decision_id(event: dict[str, Any]) -> str:
    """The decision an event reports, as record-approval names it (version, status, time in seconds)."""
    detail = event["detail"]
    return f"v{detail['ModelPackageVersion']}:{detail['ModelApprovalStatus']}:{detail['LastModifiedTime']}"


def test_record_approval_keeps_its_guarantees_under_single_faults(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    injector = FaultInjector()
    # A person allowed to decide, with their own SageMaker client (one: a client takes half a second).
    approver = lambdas.sagemaker_as(lambdas.approver())
    violations: list[str] = []
    injected = Counter[str]()
    decisions = Counter[int]()
    started = time.perf_counter()
    # One clock for all trials, moved only forward: the packages' creation times keep the trials' order
    # (the gate's baseline is the newest Approved package by creation time).
    with aws.client_hooks(injector.install), time_machine.travel(time.time(), tick=True) as traveller:
        clock = Clock(traveller)
        for seed in range(APPROVAL_TRIALS):
            rng = random.Random(seed)
            injector.plan = FaultPlan(enabled=False)
            trial = package_awaiting_approval(lambdas, seed)
            lambdas.emulated.read_inbox(lambdas.inbox)
            plan = FaultPlan(seed=seed, at={rng.randrange(APPROVAL_ATTEMPTS): rng.choice(ALL_KINDS)})
            injector.plan = plan
            count = rng.randint(1, MAX_DECISIONS)
            decisions[count] += 1
            platform = AsyncLambda(
                lambda event, request_id: lambdas.record_approval(event, request_id), clock
            )
            pending: list[dict[str, Any]] = []  # events EventBridge has not delivered yet
            status = rng.choice(model_package.DECISIONS)
            for index in range(count):
                clock.advance(rng.randint(1, 600))  # decisions are whole seconds apart at least
                make_decision(lambdas, trial, plan, approver, status, index)
                pending += at_least_once(lambdas.package_events, rng)
                lambdas.package_events.clear()
                rng.shuffle(pending)
                # Some events now, the rest later, after the next decisions: any order, any delay.
                now = len(pending) if index == count - 1 else rng.randint(0, len(pending))
                for event in pending[:now]:
                    if platform.deliver(event) and trial.decisions[-1] == decision_id(event):
                        trial.read_while_current.add(decision_id(event))
                del pending[:now]
                status = (
                    model_package.REJECTED if status == model_package.APPROVED else model_package.APPROVED
                )
            plan.enabled = False
            platform.redrive()
            trial.inbox += lambdas.emulated.read_inbox(lambdas.inbox)
            injected.update(f.kind for f in plan.injected)
            problem = check_approvals(lambdas, trial, plan)
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}; errors: {platform.errors[:3]}")
    elapsed = time.perf_counter() - started
    print(
        f"\nrecord-approval: {APPROVAL_TRIALS} trials in {elapsed:.1f} s, decisions per package {dict(decisions)}, "
        f"faults {dict(injected)}"
    )
    assert violations == []
    assert sum(injected.values()) == APPROVAL_TRIALS, "every trial meets its fault"


def make_decision(
    lambdas: Lambdas, trial: ApprovalTrial, plan: FaultPlan, approver: Any, status: str, index: int
) -> None:
    """A person decides (not one of the trial's calls: no fault); the inbox so far is kept, then a mark."""
    enabled, plan.enabled = plan.enabled, False
    try:
        trial.inbox += lambdas.emulated.read_inbox(lambdas.inbox)
        trial.inbox.append((DECIDED, index))
        approver.update_model_package(
            ModelPackageArn=trial.arn, ModelApprovalStatus=status, ApprovalDescription=f"decision {index}"
        )
        (event,) = [e for e in lambdas.package_events if e["detail"]["ModelApprovalStatus"] == status]
        trial.decisions.append(decision_id(event))
    finally:
        plan.enabled = enabled


def at_least_once(events: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    deliveries = []
    for event in events:
        deliveries.append(event)
        if rng.random() < REDELIVERY_RATE:
            deliveries.append(event)
        if rng.random() < NEW_ID_RATE:
            deliveries.append({**event, "id": str(uuid.uuid4())})
    return deliveries


def email_decision(email: dict[str, Any]) -> str:
    """The decision an approval email announces: its version, status and time (to the second)."""
    at = next(line for line in email["body"].splitlines() if line.startswith("At (UTC):"))
    moment = datetime.fromisoformat(at.removeprefix("At (UTC):").strip())
    version = email["attributes"]["model_package_version"]
    return f"v{version}:{email['attributes']['status']}:{moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def check_approvals(lambdas: Lambdas, trial: ApprovalTrial, plan: FaultPlan) -> str | None:
    record = lambdas.record_of(trial.name)
    recorded = Counter(d["decision_id"] for d in record.get("approvals") or [])
    if set(recorded) != set(trial.decisions) or max(recorded.values()) > 1:
        return f"decisions recorded {dict(recorded)}, made {trial.decisions}"
    newest = trial.decisions[-1]
    if record.get("approval_decision_id") != newest or not newest.startswith(
        f"v{record.get('model_package_version')}:{record.get('approval_status')}:"
    ):
        return f"current decision {record.get('approval_decision_id')} ({record.get('approval_status')}), newest {newest}"
    limit = 2 if duplicate_is_forced(plan) else 1
    made = 0  # decisions made when an email was sent
    emailed = Counter[str]()
    for item in trial.inbox:
        if isinstance(item, tuple):
            made = item[1] + 1
            continue
        if item["attributes"].get("event") != "approval" or item["attributes"].get("job_name") != trial.name:
            return f"an unexpected email: {item['subject']}"
        decision = email_decision(item)
        if decision not in trial.decisions[:made]:
            return f"an email for {decision}, which was not made yet (made: {trial.decisions[:made]})"
        if decision != trial.decisions[made - 1]:
            return f"an email for {decision} after a newer decision {trial.decisions[made - 1]} replaced it"
        emailed[decision] += 1
    for decision in {newest} | trial.read_while_current:
        if emailed[decision] == 0:
            return f"no email for {decision}, read while it was the newest (emails: {dict(emailed)})"
    if emailed and max(emailed.values()) > limit:
        return f"emails {dict(emailed)} (ambiguous fault: {limit == 2})"
    return None
