"""data-trigger, under its own role with IAM enforced, against the local CodePipeline: one pipeline start per
batch, partial batch failures, nothing lost, one execution per object version, poison to the DLQ."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from data_trigger import trigger
from pipeline_common import aws
from pipeline_common.errors import ConfigurationError

from mlpipe.local.faults import FaultInjector, FaultPlan
from stacks.functions import DATA_TRIGGER
from tests.lambda_fixtures import ALL_ATTEMPTS, Lambdas, VirtualBackoff
from tests.lambdas.builders import s3_object_created, sqs_event, sqs_record

BUCKET, PREFIX = "data-bucket", "datasets/"


def valid_record(key: str, version: str = "v1") -> dict[str, Any]:
    return sqs_record(json.dumps(s3_object_created(BUCKET, key, version_id=version)))


def failures(response: dict[str, Any]) -> set[str]:
    return {item["itemIdentifier"] for item in response["batchItemFailures"]}


def starts(lambdas: Lambdas) -> list[Any]:
    return [e for e in lambdas.codepipeline.executions.values() if e.trigger_type == "StartPipelineExecution"]


def test_a_burst_of_500_events_in_5_batches_starts_at_most_5_executions_and_loses_nothing(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    batches = [
        [valid_record(f"{PREFIX}train/burst/{b:02d}-{i:03d}.csv", f"ver{b}{i}") for i in range(100)]
        for b in range(5)
    ]
    # The third start fails through all of botocore's retries: that whole batch must come back for a retry.
    plan = FaultPlan(
        by_operation={"codepipeline.StartPipelineExecution": [None, None, *["server_error"] * ALL_ATTEMPTS]}
    )
    succeeded: set[str] = set()
    failed: set[str] = set()
    with aws.client_hooks(FaultInjector(plan).install):
        for batch in batches:
            batch_failures = failures(lambdas.trigger(sqs_event(batch)))
            failed |= batch_failures
            succeeded |= {r["messageId"] for r in batch} - batch_failures
    all_ids = {r["messageId"] for batch in batches for r in batch}
    assert succeeded | failed == all_ids and not succeeded & failed  # every message accounted for
    assert failed == {r["messageId"] for r in batches[2]}
    executions = starts(lambdas)
    assert len(executions) == 4
    for execution in executions:
        assert execution.variables["TRIGGER"] == "data-upload"
        assert execution.variables["DATA_CHANGE"].startswith("100 objects: datasets/train/burst/")
        assert len(execution.variables["DATA_CHANGE"]) <= 1000
        assert len(execution.client_request_token) <= 128
    # The failed batch's retry starts it, once.
    assert failures(lambdas.trigger(sqs_event(batches[2]))) == set()
    assert len(starts(lambdas)) == 5


def test_a_duplicate_delivery_of_a_started_version_in_a_later_batch_starts_nothing(lambdas: Lambdas) -> None:
    """Issue 9 B3: dedup on bucket, key and version id."""
    first = valid_record(f"{PREFIX}train/a.csv", "v1")
    assert failures(lambdas.trigger(sqs_event([first, valid_record(f"{PREFIX}train/b.csv", "v1")]))) == set()
    again = sqs_record(first["body"])  # the same object version, a new message (EventBridge at least once)
    newer = valid_record(f"{PREFIX}train/a.csv", "v2")  # a new version of the same key is new data
    assert failures(lambdas.trigger(sqs_event([again]))) == set()
    assert len(starts(lambdas)) == 1
    lambdas.trigger(sqs_event([again, newer]))
    (_, second) = starts(lambdas)
    assert second.variables["DATA_CHANGE"] == "1 object: datasets/train/a.csv@v2"


def test_a_poison_message_ends_in_the_dlq(lambdas: Lambdas) -> None:
    emulated = lambdas.emulated
    dlq_url, dlq_arn = emulated.queue()
    queue_url, _ = emulated.queue(visibility_timeout=1, dead_letter_arn=dlq_arn, max_receive_count=2)
    sqs = emulated.client("sqs")
    for index in range(4):
        body = json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/part-{index}.csv"))
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    poison = "this is not an S3 event {"
    sqs.send_message(QueueUrl=queue_url, MessageBody=poison)

    # What the Lambda event source mapping does: receive, invoke, delete what succeeded, repeat.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if messages:
            event = sqs_event([sqs_record(m["Body"], m["MessageId"]) for m in messages])
            failed = failures(lambdas.trigger(event))
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            continue
        counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        if (
            int(counts["ApproximateNumberOfMessages"]) + int(counts["ApproximateNumberOfMessagesNotVisible"])
            == 0
        ):
            break
        time.sleep(1.1)  # the visibility timeout: the failed message comes back
    else:
        pytest.fail("the main queue did not drain")

    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages", []
    )
    assert [m["Body"] for m in dead] == [poison]
    started = " ".join(e.variables["DATA_CHANGE"] for e in starts(lambdas))
    assert all(f"datasets/train/part-{i}.csv" in started for i in range(4))  # every valid object started
    assert 1 <= len(starts(lambdas)) <= 4


def test_objects_outside_the_prefix_and_folder_markers_are_ignored(
    lambdas: Lambdas, caplog: pytest.LogCaptureFixture
) -> None:
    records = [
        sqs_record(json.dumps(s3_object_created(BUCKET, "other/train/x.csv"))),
        sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}notes.txt"))),
        sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/", size=0))),
        sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/empty.csv", size=0))),
        sqs_record(json.dumps(s3_object_created("another-bucket", f"{PREFIX}train/x.csv"))),
        valid_record(f"{PREFIX}validation/v.csv", "abc123"),
        valid_record(f"{PREFIX}test/t.csv", "def456"),
    ]
    with caplog.at_level("INFO"):
        response = lambdas.trigger(sqs_event(records))
    assert response == {"batchItemFailures": []}
    (execution,) = starts(lambdas)
    assert execution.variables == {
        "TRIGGER": "data-upload",
        "DATA_CHANGE": "2 objects: datasets/test/t.csv@def456, datasets/validation/v.csv@abc123",
    }
    ignored = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignoring")]
    assert len(ignored) == 5
    assert any("folder marker" in line for line in ignored) and any("outside" in line for line in ignored)


def test_a_batch_of_only_ignored_objects_starts_nothing(lambdas: Lambdas) -> None:
    response = lambdas.trigger(
        sqs_event([sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/", size=0)))])
    )
    assert response == {"batchItemFailures": []} and starts(lambdas) == []


def deeply_nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def test_malformed_bodies_fail_alone_and_the_rest_still_starts(lambdas: Lambdas) -> None:
    huge_size = json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/x.csv")).replace(
        '"size": 100', '"size": 1e999'
    )
    bad = [
        sqs_record("not json"),
        sqs_record(json.dumps({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}})),
        sqs_record(
            json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {}}})
        ),
        sqs_record(json.dumps([1, 2])),
        # Issue 9 B3: these used to raise out of the parser and fail (then dead-letter) the whole batch.
        sqs_record(huge_size),
        sqs_record(deeply_nested()),
    ]
    good = [valid_record(f"{PREFIX}train/a.csv"), valid_record(f"{PREFIX}train/b.csv")]
    response = lambdas.trigger(sqs_event(bad + good))
    assert failures(response) == {r["messageId"] for r in bad}
    assert len(starts(lambdas)) == 1


def test_a_failed_start_fails_every_valid_message_but_not_the_ignored_ones(lambdas: Lambdas) -> None:
    lambdas.env(DATA_TRIGGER)["PIPELINE_NAME"] = "no-such-pipeline"  # PipelineNotFoundException
    good = [valid_record(f"{PREFIX}train/{i}.csv") for i in range(3)]
    ignored = sqs_record(json.dumps(s3_object_created(BUCKET, "elsewhere/x.csv")))
    response = lambdas.trigger(sqs_event([*good, ignored]))
    assert failures(response) == {r["messageId"] for r in good}


def test_the_request_token_is_deterministic_and_the_summary_is_bounded() -> None:
    ids = [str(uuid.uuid4()) for _ in range(100)]
    assert trigger.request_token(ids) == trigger.request_token(reversed(ids))
    assert trigger.request_token(ids) != trigger.request_token(ids[:-1])
    token = trigger.request_token(ids)
    assert len(token) <= 128 and all(c.isalnum() or c == "-" for c in token)
    objects = [trigger.NewObject(i, BUCKET, f"{PREFIX}train/{'x' * 80}-{i}.csv", "v" * 32, 10) for i in ids]
    summary = trigger.data_change_summary(objects)
    assert summary.startswith("100 objects: ") and len(summary) == 1000 and summary.endswith("...")


def test_configuration_error_names_the_variable(lambdas: Lambdas) -> None:
    del lambdas.env(DATA_TRIGGER)["PIPELINE_NAME"]
    with pytest.raises(ConfigurationError, match="PIPELINE_NAME"):
        lambdas.trigger(sqs_event([valid_record(f"{PREFIX}train/a.csv")]))
