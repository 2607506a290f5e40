"""record-status: at-least-once, out-of-order events give one correct record and one email per transition."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pipeline_common import audit
from pipeline_common.errors import BadInputError
from record_status import handler

from tests.conftest import Emulated
from tests.lambda_fixtures import RecordEnv
from tests.lambdas.builders import COMMIT, IMAGE_URI, PREFIX, state_change_event

METRICS = {"validation:rmse": 0.4213, "train:rmse": 0.301, "validation:r2": 0.87}


def new_name() -> str:
    return f"{PREFIX}{uuid.uuid4()}"


def deliver(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handler.lambda_handler(event, context)


def first_record(emulated: Emulated, table: str, name: str) -> None:
    """What start-training writes before any event arrives."""
    audit.create_record(
        table,
        {
            "job_name": name,
            "status": "InProgress",
            "status_rank": audit.CREATED_RANK,
            "commit_id": COMMIT,
            "repo": "example-org/ml-build-train-pipeline",
            "branch": "main",
            "data_version": "0a1b2c3d4e5f",
            "data_versions": {"datasets/train/a.csv": "v1"},
            "image_digest": "sha256:" + "d" * 64,
            "trigger": "data-upload",
            "pipeline_execution_id": name.removeprefix(PREFIX),
            "created_at": audit.now_iso(),
            "updated_at": audit.now_iso(),
        },
    )


def test_started_then_completed_updates_every_field_and_sends_two_emails(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    name = new_name()
    first_record(emulated, record_env.table, name)
    deliver(state_change_event(name, "InProgress", 10, secondary="Starting"), lambda_context)
    deliver(state_change_event(name, "InProgress", 20, secondary="Training"), lambda_context)  # quiet refresh
    result = deliver(state_change_event(name, "Completed", 900, metrics=METRICS), lambda_context)
    assert result["outcome"] == "transition" and result["emailed"]

    record = emulated.get_record(record_env.table, name)
    assert record is not None
    assert record["status"] == "Completed" and record["secondary_status"] == "Completed"
    assert record["job_arn"].endswith(f"training-job/{name}")
    assert record["commit_id"] == COMMIT and record["branch"] == "main"
    assert record["repo"] == "example-org/ml-build-train-pipeline"
    # Start-training's values stay authoritative over the tags.
    assert record["data_version"] == "0a1b2c3d4e5f" and record["trigger"] == "data-upload"
    assert record["data_versions"] == {"datasets/train/a.csv": "v1"}
    assert record["data_bucket"] == "data-bucket" and record["data_prefix"] == "datasets/"
    assert record["image_uri"] == IMAGE_URI and record["image_digest"].startswith("sha256:")
    assert record["hyperparameters"] == {"max_depth": "6", "eta": "0.2"}
    assert record["instance_type"] == "ml.m5.large" and record["instance_count"] == 1
    assert record["created_at"] == "2026-11-22T10:00:00.000+00:00"
    assert record["started_at"] == "2026-11-22T10:01:00.000+00:00"
    assert record["ended_at"] == "2026-11-22T10:13:34.000+00:00"
    assert record["billable_seconds"] == 754
    assert record["metrics"] == METRICS
    assert record["model_artifact"] == f"s3://models/models/{name}/output/model.tar.gz"
    assert record["pipeline_execution_id"] == name.removeprefix(PREFIX)
    assert record["pipeline_name"] == "TrainingPipeline-test"
    assert "failure_reason" not in record

    emails = emulated.read_inbox(record_env.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Completed"]
    assert all(e["attributes"]["job_name"] == name for e in emails)
    completed = emails[-1]
    assert completed["subject"].startswith(f"[mlpipe/test] Training Completed: {name[:24]}")
    assert f"({COMMIT[:7]}, data v" in completed["subject"] and len(completed["subject"]) < 100
    assert len(completed["subject"]) < 100
    body = completed["body"]
    for expected in (
        "Status:        Completed",
        "validation:rmse",
        "0.4213",
        "12m34s",
        "ml.m5.large",
        "~$0.0241",
    ):
        assert expected in body
    assert f"https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/{name}" in body
    assert "TrainingJobs" in body and f"executions/{name.removeprefix(PREFIX)}" in body


@pytest.mark.parametrize(
    "idempotency", [True, False], ids=["with-idempotency-table", "conditional-update-only"]
)
def test_a_duplicate_event_delivered_three_times_sends_one_email(
    idempotency: bool,
    record_env: RecordEnv,
    emulated: Emulated,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not idempotency:
        monkeypatch.delenv("IDEMPOTENCY_TABLE_NAME")
    name = new_name()
    first_record(emulated, record_env.table, name)
    event = state_change_event(name, "Completed", 900, metrics=METRICS)
    outcomes = [deliver(event, lambda_context) for _ in range(3)]
    if idempotency:
        # Powertools answers redeliveries with the first result, without touching the audit table.
        assert outcomes == [outcomes[0]] * 3 and outcomes[0]["emailed"]
        keys = emulated.client("dynamodb").scan(TableName=record_env.idempotency_table)["Items"]
        assert len(keys) == 1 and keys[0]["status"]["S"] == "COMPLETED"
    else:
        assert [(o["outcome"], o["emailed"]) for o in outcomes] == [
            ("transition", True),
            ("ignored", False),
            ("ignored", False),
        ]
    emails = emulated.read_inbox(record_env.inbox)
    assert len(emails) == 1 and emails[0]["attributes"]["status"] == "Completed"
    record = emulated.get_record(record_env.table, name)
    assert record is not None and record["status"] == "Completed"


def test_the_same_change_under_new_event_ids_sends_one_email(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    """Idempotency keys on the event id; a redelivery with a new id is caught by the conditional update."""
    name = new_name()
    for _ in range(3):
        deliver(
            state_change_event(name, "Failed", 300, failure_reason="AlgorithmError: boom"), lambda_context
        )
    assert len(emulated.read_inbox(record_env.inbox)) == 1


def test_out_of_order_completed_before_in_progress_stays_completed(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    name = new_name()
    first_record(emulated, record_env.table, name)
    completed = deliver(state_change_event(name, "Completed", 900, metrics=METRICS), lambda_context)
    late = deliver(state_change_event(name, "InProgress", 10, secondary="Training"), lambda_context)
    also_late = deliver(state_change_event(name, "Stopping", 950), lambda_context)  # newer time, lower rank
    assert completed["outcome"] == "transition"
    assert late["outcome"] == also_late["outcome"] == "ignored"
    record = emulated.get_record(record_env.table, name)
    assert (
        record is not None and record["status"] == "Completed" and record["secondary_status"] == "Completed"
    )
    assert record["metrics"] == METRICS
    emails = emulated.read_inbox(record_env.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["Completed"]


def test_an_event_before_the_first_record_creates_it_from_the_tags(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    name = new_name()
    deliver(state_change_event(name, "InProgress", 10, secondary="Starting"), lambda_context)
    record = emulated.get_record(record_env.table, name)
    assert record is not None
    assert record["status"] == "InProgress" and record["commit_id"] == COMMIT
    assert record["data_version"] == "abcdef012345" and record["trigger"] == "push"
    assert record["pipeline_execution_id"] == name.removeprefix(PREFIX)
    # start-training's write arrives later: it fills gaps and leaves the status alone.
    first_record(emulated, record_env.table, name)
    record = emulated.get_record(record_env.table, name)
    assert record is not None
    assert record["status"] == "InProgress" and record["status_rank"] == 1
    assert record["data_versions"] == {"datasets/train/a.csv": "v1"}
    assert record["data_version"] == "abcdef012345"  # the tag is what the job actually carries
    assert len(emulated.read_inbox(record_env.inbox)) == 1


def test_a_failed_job_carries_its_reason_into_the_record_and_the_email(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    name = new_name()
    reason = "AlgorithmError: ValueError: max_depth must be >= 0, got -1"
    first_record(emulated, record_env.table, name)
    deliver(state_change_event(name, "Failed", 300, failure_reason=reason), lambda_context)
    record = emulated.get_record(record_env.table, name)
    assert record is not None and record["status"] == "Failed" and record["failure_reason"] == reason
    (email,) = emulated.read_inbox(record_env.inbox)
    assert email["attributes"]["status"] == "Failed"
    assert email["subject"].startswith(f"[mlpipe/test] Training Failed: {name[:24]}")
    assert f"Reason:        {reason}" in email["body"]


def test_a_publish_failure_is_retried_without_losing_or_doubling_the_email(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any, clients: Any
) -> None:
    from pipeline_common import aws

    class FlakySns:
        def __init__(self) -> None:
            self.failures = 1

        def publish(self, **kwargs: Any) -> dict[str, Any]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("SNS unreachable")
            return emulated.client("sns").publish(**kwargs)

    name = new_name()
    event = state_change_event(name, "Completed", 900)
    aws_sns = FlakySns()
    with aws.use_clients({"sns": aws_sns}):
        with pytest.raises(ConnectionError):
            deliver(event, lambda_context)  # EventBridge retries the event
        retried = deliver(event, lambda_context)
        deliver(event, lambda_context)  # one more redelivery: nothing new
    # The status was written by the failed attempt; the retry still owes (and sends) the email.
    assert retried["outcome"] == "ignored" and retried["emailed"]
    emails = emulated.read_inbox(record_env.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["Completed"]


def test_a_secondary_status_change_refreshes_quietly(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    name = new_name()
    deliver(state_change_event(name, "InProgress", 10, secondary="Starting"), lambda_context)
    refreshed = deliver(state_change_event(name, "InProgress", 60, secondary="Training"), lambda_context)
    older = deliver(state_change_event(name, "InProgress", 30, secondary="Downloading"), lambda_context)
    assert refreshed["outcome"] == "refreshed" and older["outcome"] == "ignored"
    record = emulated.get_record(record_env.table, name)
    assert record is not None and record["secondary_status"] == "Training"
    assert len(emulated.read_inbox(record_env.inbox)) == 1


def malformed_events() -> list[Any]:
    good = state_change_event(f"{PREFIX}x", "Completed", 10)
    no_name = state_change_event(f"{PREFIX}x", "Completed", 10)
    del no_name["detail"]["TrainingJobName"]
    bad_status = state_change_event(f"{PREFIX}x", "Exploded", 10)
    no_detail = {k: v for k, v in good.items() if k != "detail"}
    other_source = {**good, "source": "aws.s3", "detail-type": "Object Created"}
    no_id = {k: v for k, v in good.items() if k != "id"}
    return [no_name, bad_status, no_detail, other_source, no_id, {"hello": "world"}]


@pytest.mark.parametrize("event", malformed_events())
def test_a_malformed_event_raises_and_writes_nothing(
    event: Any, record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    with pytest.raises(BadInputError):
        deliver(event, lambda_context)
    assert emulated.scan(record_env.table) == []
    assert emulated.read_inbox(record_env.inbox) == []


def test_a_job_outside_the_prefix_is_ignored(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any
) -> None:
    result = deliver(state_change_event("someone-elses-job", "Completed", 10), lambda_context)
    assert result["outcome"] == "not-ours"
    assert emulated.scan(record_env.table) == []


def test_configuration_error_names_the_variable(
    record_env: RecordEnv, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOPIC_ARN")
    with pytest.raises(Exception, match="TOPIC_ARN"):
        deliver(state_change_event(new_name(), "Completed", 10), lambda_context)


def test_an_unreachable_idempotency_table_does_not_stop_the_record(
    record_env: RecordEnv, emulated: Emulated, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEMPOTENCY_TABLE_NAME", "no-such-table")
    name = new_name()
    event = state_change_event(name, "Completed", 900)
    first, second = deliver(event, lambda_context), deliver(event, lambda_context)
    assert first["emailed"] and not second["emailed"]
    record = emulated.get_record(record_env.table, name)
    assert record is not None and record["status"] == "Completed"
    assert len(emulated.read_inbox(record_env.inbox)) == 1
