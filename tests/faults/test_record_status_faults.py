"""record-status under seeded faults (issue 9 B1, C): any single fault at any call boundary, followed by
Lambda's retries and a DLQ redrive, never loses the terminal email, never sends a stale one, and leaves
the record at the job's real status. Events arrive at least once and in any order.

Each trial: a finished job in the local SageMaker; its events (built from AWS's published sample),
shuffled, some delivered twice; ONE fault (a seeded kind) at a seeded request attempt; the platform's
retries; a redrive of anything dead-lettered. Then the invariants.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import time_machine
from pipeline_common import audit, aws

from mlpipe.local.faults import ALL_KINDS, FaultInjector, FaultPlan
from tests.faults.platform import AsyncLambda, Clock
from tests.lambda_fixtures import Lambdas, VirtualBackoff
from tests.lambdas.builders import PREFIX, default_tags, state_change_event, tuning_state_change_event

TRIALS = 200
# A trial makes 20 to 30 request attempts (3 to 5 deliveries): the single fault lands anywhere among the
# first 20, so every trial meets it.
ATTEMPTS_PER_TRIAL = 20
# The writes after SNS accepted a message: a crash or a lost response there leaves SNS's publish unrecorded,
# so a retry sends the email again. That duplicate is the ambiguity AWS itself leaves (SNS has no dedup).
AMBIGUOUS = {"applied_then_error", "applied_then_drop", "crash_after"}


def events_of(name: str, terminal: str, rng: random.Random) -> list[dict[str, Any]]:
    events = [
        state_change_event(name, "InProgress", 10, secondary="Starting"),
        state_change_event(name, "InProgress", 60, secondary="Training"),
        state_change_event(name, terminal, 900, failure_reason="AlgorithmError: boom"),
    ]
    events += [rng.choice(events) for _ in range(rng.randint(0, 2))]  # at-least-once: duplicates
    rng.shuffle(events)  # in any order
    return events


def duplicate_is_forced(plan: FaultPlan, status: str) -> bool:
    """Was the single fault one that leaves an accepted publish unrecorded?"""
    for fault in plan.injected:
        if fault.service == "sns" and fault.kind in AMBIGUOUS:
            return True
        calls = plan.calls
        if fault.service == "dynamodb" and fault.index > 0 and calls[fault.index - 1] == ("sns", "Publish"):
            return fault.kind.startswith("crash")  # the crash came between publish and its record
    return False


def test_record_status_keeps_its_guarantees_under_single_faults(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    injector = FaultInjector()
    violations: list[str] = []
    injected = Counter[str]()
    started = time.perf_counter()
    with aws.client_hooks(injector.install):
        for seed in range(TRIALS):
            rng = random.Random(seed)
            name = f"{PREFIX}faults-{seed}-{uuid.uuid4().hex[:6]}"
            terminal = rng.choice(("Completed", "Failed", "Stopped"))
            lambdas.finished_job(name, terminal)
            lambdas.emulated.read_inbox(lambdas.inbox)  # empty: no email yet
            plan = FaultPlan(seed=seed, at={rng.randrange(ATTEMPTS_PER_TRIAL): rng.choice(ALL_KINDS)})
            injector.plan = plan
            with time_machine.travel(time.time(), tick=True) as traveller:
                platform = AsyncLambda(
                    lambda event, request_id: lambdas.record(event, request_id), Clock(traveller)
                )
                for event in events_of(name, terminal, rng):
                    platform.deliver(event)
                plan.enabled = False
                platform.redrive()
            injected.update(f.kind for f in plan.injected)
            problem = check(lambdas, name, terminal, plan)
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}; errors: {platform.errors[:3]}")
    elapsed = time.perf_counter() - started
    print(f"\nrecord-status: {TRIALS} trials in {elapsed:.1f} s, faults injected: {dict(injected)}")
    assert sum(injected.values()) == TRIALS, "every trial meets its fault"
    assert violations == []


def check(lambdas: Lambdas, name: str, terminal: str, plan: FaultPlan) -> str | None:
    record = lambdas.emulated.get_record(lambdas.table, name)
    if record is None or record.get("status") != terminal:
        return f"final record status {record and record.get('status')!r}, the job is {terminal}"
    emails = [e["attributes"]["status"] for e in lambdas.emulated.read_inbox(lambdas.inbox)]
    if terminal not in emails:
        return f"the {terminal} email was lost (emails: {emails})"
    ranks = [audit.STATUS_RANK[status] for status in emails]
    if ranks != sorted(ranks):
        return f"a stale email, sent after a newer one (emails: {emails})"
    counts = Counter(emails)
    if counts[terminal] > 1 and not duplicate_is_forced(plan, terminal):
        return f"{counts[terminal]} {terminal} emails without an ambiguous fault (emails: {emails})"
    if max(counts.values()) > 2:
        return f"an email sent more than twice (emails: {emails})"
    return None


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_of_fault_on_each_call_of_a_completed_event(
    kind: str, lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    """Exhaustive over the call boundaries of one Completed delivery: every position gets every kind."""
    injector = FaultInjector()
    with aws.client_hooks(injector.install):
        name = f"{PREFIX}probe-{uuid.uuid4().hex[:8]}"
        lambdas.finished_job(name)
        probe = FaultPlan(enabled=True)
        injector.plan = probe
        lambdas.record(state_change_event(name, "Completed", 900))
        calls = len(probe.calls)
        lambdas.emulated.read_inbox(lambdas.inbox)
        for position in range(calls):
            name = f"{PREFIX}{kind}-{position}-{uuid.uuid4().hex[:6]}"
            lambdas.finished_job(name)
            plan = FaultPlan(at={position: kind})
            injector.plan = plan
            with time_machine.travel(time.time(), tick=True) as traveller:
                platform = AsyncLambda(
                    lambda event, request_id: lambdas.record(event, request_id), Clock(traveller)
                )
                platform.deliver(state_change_event(name, "Completed", 900))
                plan.enabled = False
                platform.redrive()
            problem = check(lambdas, name, "Completed", plan)
            assert problem is None, f"{kind} at call {position} ({plan.calls[position]}): {problem}"


# -- a tuning job and its trials ---------------------------------------------------------------------------------
TUNING_TRIALS = 60
# A tuning trial makes 25 or more request attempts (at least four deliveries, and the terminal one describes the
# tuning job, its best job and every trial): the single fault lands anywhere among the first 20.
TUNING_ATTEMPTS_PER_TRIAL = 20


def tuning_events_of(name: str, trials: list[str], terminal: str, rng: random.Random) -> list[dict[str, Any]]:
    tags = {**default_tags(name), "tuning-job": name}
    events = [
        tuning_state_change_event(name, "InProgress", 10),
        tuning_state_change_event(name, terminal, 900),
    ]
    for trial in trials:
        events += [
            state_change_event(trial, "InProgress", 20, tags=tags),
            state_change_event(trial, "Completed", 800, tags=tags),
        ]
    events += [rng.choice(events) for _ in range(rng.randint(0, 3))]
    rng.shuffle(events)
    return events


def test_record_status_keeps_its_guarantees_for_tuning_jobs_under_single_faults(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    """The tuning job's record ends at its status with the best job named, each trial's at its own, the
    tuning job's terminal email is never lost nor stale, and no trial sends one, whatever single fault."""
    injector = FaultInjector()
    violations: list[str] = []
    injected = Counter[str]()
    started = time.perf_counter()
    with aws.client_hooks(injector.install):
        for seed in range(TUNING_TRIALS):
            rng = random.Random(seed)
            name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
            injector.plan = FaultPlan(enabled=False)
            trials = lambdas.finished_tuning_job(name, trials=rng.randint(1, 3))
            lambdas.emulated.read_inbox(lambdas.inbox)
            plan = FaultPlan(seed=seed, at={rng.randrange(TUNING_ATTEMPTS_PER_TRIAL): rng.choice(ALL_KINDS)})
            injector.plan = plan
            with time_machine.travel(time.time(), tick=True) as traveller:
                platform = AsyncLambda(
                    lambda event, request_id: lambdas.record(event, request_id), Clock(traveller)
                )
                for event in tuning_events_of(name, trials, "Completed", rng):
                    platform.deliver(event)
                plan.enabled = False
                platform.redrive()
            injected.update(f.kind for f in plan.injected)
            problem = check_tuning(lambdas, name, trials, plan)
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}; errors: {platform.errors[:3]}")
    elapsed = time.perf_counter() - started
    print(
        f"\nrecord-status, tuning: {TUNING_TRIALS} trials in {elapsed:.1f} s, faults injected: {dict(injected)}"
    )
    assert violations == []
    assert sum(injected.values()) == TUNING_TRIALS, "every trial meets its fault"


def check_tuning(lambdas: Lambdas, name: str, trials: list[str], plan: FaultPlan) -> str | None:
    problem = check(lambdas, name, "Completed", plan)
    if problem:
        return problem
    record = lambdas.emulated.get_record(lambdas.table, name)
    best = lambdas.sagemaker.tuning.job(name).best()
    if record.get("best_training_job") != best or not record.get("model_artifact"):
        return f"the tuning record names {record.get('best_training_job')!r} as best, not {best!r}"
    for trial in trials:
        trial_record = lambdas.emulated.get_record(lambdas.table, trial)
        if trial_record is None or trial_record.get("status") != "Completed":
            return f"trial {trial} ended at {trial_record and trial_record.get('status')!r}"
        if trial_record.get("tuning_job") != name or "notified_rank" in trial_record:
            return f"trial {trial} is not marked as {name}'s, or was emailed"
    return None
