"""data-trigger: one pipeline start per batch, partial batch failures, nothing lost, poison to the DLQ."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY
from botocore.validate import validate_parameters
from data_trigger import handler, trigger
from pipeline_common.errors import ConfigurationError

from tests.conftest import Emulated
from tests.lambdas.builders import s3_object_created, sqs_event, sqs_record

BUCKET, PREFIX = "data-bucket", "datasets/"


class RecordingCodePipeline:
    """Accepts start_pipeline_execution as CodePipeline would (validated against the service model)."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self._shape = (
            botocore.session.get_session()
            .get_service_model("codepipeline")
            .operation_model("StartPipelineExecution")
            .input_shape
        )

    def start_pipeline_execution(self, **request: Any) -> dict[str, Any]:
        validate_parameters(request, self._shape)
        self.starts.append(request)
        return {"pipelineExecutionId": str(uuid.uuid4())}


def valid_record(key: str, version: str = "v1") -> dict[str, Any]:
    return sqs_record(json.dumps(s3_object_created(BUCKET, key, version_id=version)))


def failures(response: dict[str, Any]) -> set[str]:
    return {item["itemIdentifier"] for item in response["batchItemFailures"]}


def test_a_burst_of_500_events_in_5_batches_starts_at_most_5_executions_and_loses_nothing(
    trigger_env: dict[str, str], stub: Any, clients: Any, lambda_context: Any
) -> None:
    codepipeline = stub("codepipeline")
    batches = [
        [valid_record(f"{PREFIX}train/burst/{b:02d}-{i:03d}.csv", f"ver{b}{i}") for i in range(100)]
        for b in range(5)
    ]
    for number in range(5):
        if number == 2:  # one start fails: that whole batch must come back for a retry
            codepipeline.stubber.add_client_error(
                "start_pipeline_execution", service_error_code="ConflictException", http_status_code=409
            )
        else:
            codepipeline.stubber.add_response(
                "start_pipeline_execution",
                {"pipelineExecutionId": str(uuid.uuid4())},
                {"name": "TrainingPipeline-test", "variables": ANY, "clientRequestToken": ANY},
            )
    clients({"codepipeline": codepipeline.recorder})

    succeeded: set[str] = set()
    failed: set[str] = set()
    for batch in batches:
        response = handler.lambda_handler(sqs_event(batch), lambda_context)
        batch_failures = failures(response)
        failed |= batch_failures
        succeeded |= {r["messageId"] for r in batch} - batch_failures

    starts = codepipeline.recorder.named("start_pipeline_execution")
    assert len(starts) <= 5
    all_ids = {r["messageId"] for batch in batches for r in batch}
    assert succeeded | failed == all_ids and not succeeded & failed  # every message accounted for
    assert failed == {r["messageId"] for r in batches[2]}
    for start in starts:
        variables = {v["name"]: v["value"] for v in start["variables"]}
        assert variables["TRIGGER"] == "data-upload"
        assert variables["DATA_CHANGE"].startswith("100 objects: datasets/train/burst/")
        assert len(variables["DATA_CHANGE"]) <= 1000
        assert len(start["clientRequestToken"]) <= 128
    assert len({s["clientRequestToken"] for s in starts}) == len(starts)


def test_a_poison_message_ends_in_the_dlq(
    emulated: Emulated, trigger_env: dict[str, str], clients: Any, lambda_context: Any
) -> None:
    dlq_url, dlq_arn = emulated.queue()
    queue_url, _ = emulated.queue(visibility_timeout=1, dead_letter_arn=dlq_arn, max_receive_count=2)
    sqs = emulated.client("sqs")
    for index in range(4):
        body = json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/part-{index}.csv"))
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    poison = "this is not an S3 event {"
    sqs.send_message(QueueUrl=queue_url, MessageBody=poison)
    codepipeline = RecordingCodePipeline()
    clients({"codepipeline": codepipeline})

    # What the Lambda event source mapping does: receive, invoke, delete what succeeded, repeat.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if messages:
            event = sqs_event([sqs_record(m["Body"], m["MessageId"]) for m in messages])
            failed = failures(handler.lambda_handler(event, lambda_context))
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
    started_keys = [
        key
        for start in codepipeline.starts
        for key in json.dumps(start["variables"]).split()
        if "datasets/train/part-" in key
    ]
    assert len(started_keys) == 4  # every valid object reached a pipeline start
    assert 1 <= len(codepipeline.starts) <= 4


def test_objects_outside_the_prefix_and_folder_markers_are_ignored(
    trigger_env: dict[str, str], clients: Any, lambda_context: Any, caplog: pytest.LogCaptureFixture
) -> None:
    codepipeline = RecordingCodePipeline()
    clients({"codepipeline": codepipeline})
    records = [
        sqs_record(json.dumps(s3_object_created(BUCKET, "other/train/x.csv"))),
        sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}notes.txt"))),
        sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/", size=0))),
        sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/empty.csv", size=0))),
        sqs_record(json.dumps(s3_object_created("another-bucket", f"{PREFIX}train/x.csv"))),
        valid_record(f"{PREFIX}validation/v.csv", "abc123"),
    ]
    with caplog.at_level("INFO"):
        response = handler.lambda_handler(sqs_event(records), lambda_context)
    assert response == {"batchItemFailures": []}
    (start,) = codepipeline.starts
    variables = {v["name"]: v["value"] for v in start["variables"]}
    assert variables == {
        "TRIGGER": "data-upload",
        "DATA_CHANGE": "1 object: datasets/validation/v.csv@abc123",
    }
    ignored = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignoring")]
    assert len(ignored) == 5
    assert any("folder marker" in line for line in ignored) and any("outside" in line for line in ignored)


def test_a_batch_of_only_ignored_objects_starts_nothing(
    trigger_env: dict[str, str], clients: Any, lambda_context: Any
) -> None:
    codepipeline = RecordingCodePipeline()
    clients({"codepipeline": codepipeline})
    response = handler.lambda_handler(
        sqs_event([sqs_record(json.dumps(s3_object_created(BUCKET, f"{PREFIX}train/", size=0)))]),
        lambda_context,
    )
    assert response == {"batchItemFailures": []} and codepipeline.starts == []


def test_malformed_bodies_fail_alone_and_the_rest_still_starts(
    trigger_env: dict[str, str], clients: Any, lambda_context: Any
) -> None:
    codepipeline = RecordingCodePipeline()
    clients({"codepipeline": codepipeline})
    bad = [
        sqs_record("not json"),
        sqs_record(json.dumps({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}})),
        sqs_record(
            json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {}}})
        ),
        sqs_record(json.dumps([1, 2])),
    ]
    good = [valid_record(f"{PREFIX}train/a.csv"), valid_record(f"{PREFIX}train/b.csv")]
    response = handler.lambda_handler(sqs_event(bad + good), lambda_context)
    assert failures(response) == {r["messageId"] for r in bad}
    assert len(codepipeline.starts) == 1


def test_a_failed_start_fails_every_valid_message_but_not_the_ignored_ones(
    trigger_env: dict[str, str], stub: Any, clients: Any, lambda_context: Any
) -> None:
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_client_error(
        "start_pipeline_execution", service_error_code="PipelineNotFoundException"
    )
    clients({"codepipeline": codepipeline.recorder})
    good = [valid_record(f"{PREFIX}train/{i}.csv") for i in range(3)]
    ignored = sqs_record(json.dumps(s3_object_created(BUCKET, "elsewhere/x.csv")))
    response = handler.lambda_handler(sqs_event([*good, ignored]), lambda_context)
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


def test_configuration_error_names_the_variable(
    trigger_env: dict[str, str], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_NAME")
    with pytest.raises(ConfigurationError, match="PIPELINE_NAME"):
        handler.lambda_handler(sqs_event([valid_record(f"{PREFIX}train/a.csv")]), lambda_context)
