"""data-trigger under seeded faults (issue 9 B3, C). Each trial: a burst of uploads, some delivered twice
(EventBridge at least once), consumed the way the SQS event source does it (random batch sizes, failed
messages back after the visibility timeout, a crash fails the whole batch, the DLQ after three receives,
then a redrive), with seeded faults at random call points. Invariants:

- no valid upload lost: every object version is recorded as started, by an execution that exists and
  began after the upload (so it trains on it). Its DATA_CHANGE summary may name only part of the
  versions it covers: a start repeated with a crashed attempt's token returns that attempt's execution;
- one execution per object version: no version is named by two executions, duplicates included.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import time_machine
from data_trigger import trigger
from pipeline_common import aws

from mlpipe.local.faults import ALL_KINDS, FaultInjector, FaultPlan, SandboxCrash
from tests.faults.platform import REDRIVE_AFTER, Clock
from tests.lambda_fixtures import Lambdas, VirtualBackoff
from tests.lambdas.builders import s3_object_created, sqs_event, sqs_record

TRIALS = 200
FAULT_RATE = 0.05
MAX_FAULTS = 3
MAX_RECEIVES = 3  # the queue's redrive policy
VISIBILITY_SECONDS = 420  # the queue's visibility timeout (6 x the function timeout + the batching window)


@dataclass
class Message:
    id: str
    body: str
    receives: int = 0


def consume(lambdas: Lambdas, queue: list[Message], rng: random.Random, clock: Clock) -> list[Message]:
    """The event source mapping: batches until the queue is empty; returns the dead letters."""
    dead: list[Message] = []
    while queue:
        batch = [queue.pop(0) for _ in range(min(len(queue), rng.randint(1, 10)))]
        for message in batch:
            message.receives += 1
        try:
            response = lambdas.trigger(sqs_event([sqs_record(m.body, m.id) for m in batch]))
            failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        except (Exception, SandboxCrash):
            failed = {m.id for m in batch}  # no response: the whole batch comes back
        back = [m for m in batch if m.id in failed]
        if back:
            clock.advance(VISIBILITY_SECONDS)
        for message in back:
            (dead if message.receives >= MAX_RECEIVES else queue).append(message)
    return dead


def test_data_trigger_keeps_its_guarantees_under_faults(
    lambdas: Lambdas, backoff: VirtualBackoff, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trigger, "PARALLEL_CALLS", 1)  # one call at a time: a seed replays the same faults
    injector = FaultInjector()
    violations: list[str] = []
    injected = Counter[str]()
    redriven = 0
    started = time.perf_counter()
    with aws.client_hooks(injector.install):
        for seed in range(TRIALS):
            rng = random.Random(seed)
            versions = [
                (f"datasets/train/t{seed}-{i}.csv", f"v{rng.randrange(10**6)}")
                for i in range(rng.randint(1, 25))
            ]
            bodies = [json.dumps(s3_object_created("data-bucket", key, version_id=v)) for key, v in versions]
            bodies += [rng.choice(bodies) for _ in range(rng.randint(0, 5))]  # duplicate deliveries
            rng.shuffle(bodies)
            queue = [Message(str(uuid.uuid4()), body) for body in bodies]
            before = set(lambdas.codepipeline.executions)
            plan = FaultPlan(seed=seed, rate=FAULT_RATE, kinds=ALL_KINDS, max_faults=MAX_FAULTS)
            injector.plan = plan
            with time_machine.travel(time.time(), tick=True) as traveller:
                clock = Clock(traveller)
                dead = consume(lambdas, queue, rng, clock)
                plan.enabled = False
                clock.advance(REDRIVE_AFTER)
                redriven += len(dead)
                for message in dead:
                    message.receives = 0
                leftover = consume(lambdas, dead, rng, clock)
            injected.update(f.kind for f in plan.injected)
            started_now = [
                lambdas.codepipeline.executions[e] for e in set(lambdas.codepipeline.executions) - before
            ]
            problem = check(lambdas, versions, started_now, leftover)
            if problem:
                violations.append(f"seed {seed} ({plan.injected}): {problem}")
    elapsed = time.perf_counter() - started
    print(
        f"\ndata-trigger: {TRIALS} trials in {elapsed:.1f} s, {redriven} messages redriven, faults {dict(injected)}"
    )
    assert sum(injected.values()) >= TRIALS / 2
    assert violations == []


def check(
    lambdas: Lambdas, versions: list[tuple[str, str]], executions: list[Any], leftover: list[Message]
) -> str | None:
    if leftover:
        return f"{len(leftover)} messages still fail after the redrive"
    named = Counter[str]()
    for execution in executions:
        for item in execution.variables["DATA_CHANGE"].split(": ", 1)[1].split(", "):
            named[item] += 1
    started_ids = {execution.id for execution in executions}
    dynamodb = lambdas.emulated.client("dynamodb")
    for key, version in versions:
        item = dynamodb.get_item(
            TableName=lambdas.idempotency_table,
            Key={"id": {"S": f"{trigger.KEY_PREFIX}s3://data-bucket/{key}#{version}"}},
            ConsistentRead=True,
        ).get("Item", {})
        if item.get("state", {}).get("S") != trigger.STARTED or item["execution_id"]["S"] not in started_ids:
            return f"the upload {key}@{version} was lost ({item or 'never claimed'})"
        if named[f"{key}@{version}"] > 1:
            return f"{key}@{version} started {named[f'{key}@{version}']} executions"
    return None
