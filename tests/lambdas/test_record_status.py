"""record-status, under its own role with IAM enforced: at-least-once, out-of-order events (built from AWS's
published sample) give one correct record, completed from DescribeTrainingJob, and one email per
transition, also when a call fails or the sandbox dies between two calls."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pipeline_common import audit, aws
from pipeline_common.errors import BadInputError

from mlpipe.local.faults import FaultInjector, FaultPlan, SandboxCrash
from stacks.functions import RECORD_STATUS
from tests.lambda_fixtures import ALL_ATTEMPTS, METRICS, Lambdas, VirtualBackoff
from tests.lambdas.builders import COMMIT, IMAGE_URI, PREFIX, output_archive, state_change_event


def new_name() -> str:
    return f"{PREFIX}{uuid.uuid4()}"


def first_record(lambdas: Lambdas, name: str) -> None:
    """What start-training writes before any event arrives (as start-training)."""
    with lambdas.as_function(RECORD_STATUS):
        audit.create_record(
            lambdas.table,
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


def test_started_then_completed_updates_every_field_and_sends_two_emails(lambdas: Lambdas) -> None:
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    lambdas.record(state_change_event(name, "InProgress", 10, secondary="Starting"))
    lambdas.record(state_change_event(name, "InProgress", 20, secondary="Training"))  # quiet refresh
    result = lambdas.record(state_change_event(name, "Completed", 900))
    assert result["outcome"] == "transition" and result["emailed"]

    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["status"] == "Completed" and record["secondary_status"] == "Completed"
    assert record["job_arn"].endswith(f"training-job/{name}")
    assert record["commit_id"] == COMMIT and record["branch"] == "main"
    assert record["repo"] == "example-org/ml-build-train-pipeline"
    # Start-training's values stay authoritative over the tags.
    assert record["data_version"] == "0a1b2c3d4e5f" and record["trigger"] == "data-upload"
    assert record["data_versions"] == {"datasets/train/a.csv": "v1"}
    assert record["data_bucket"] == lambdas.data_bucket and record["data_prefix"] == "datasets/"
    assert record["image_uri"] == IMAGE_URI and record["image_digest"].startswith("sha256:")
    assert record["hyperparameters"] == {"max_depth": "6", "eta": "0.2"}
    assert record["instance_type"] == "ml.m5.large" and record["instance_count"] == 1
    assert record["created_at"] == "2026-11-22T10:00:00.000+00:00"
    assert record["started_at"] == "2026-11-22T10:01:00.000+00:00"
    assert record["ended_at"] == "2026-11-22T10:13:34.000+00:00"
    # Issue 9 A5: the event carries none of these; DescribeTrainingJob does.
    assert record["billable_seconds"] == 754 and record["training_seconds"] == 754
    assert record["metrics"] == METRICS
    assert record["use_spot"] is False
    assert record["model_artifact"] == f"s3://{lambdas.model_bucket}/models/{name}/output/model.tar.gz"
    assert record["pipeline_execution_id"] == name.removeprefix(PREFIX)
    assert record["pipeline_name"] == "TrainingPipeline-test"
    assert "failure_reason" not in record

    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Completed"]
    assert all(e["attributes"]["job_name"] == name for e in emails)
    completed = emails[-1]
    assert completed["subject"].startswith(f"[mlpipe/test] Training Completed: {name[:24]}")
    assert f"({COMMIT[:7]}, data v" in completed["subject"] and len(completed["subject"]) < 100
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
def test_a_duplicate_event_delivered_three_times_sends_one_email(idempotency: bool, lambdas: Lambdas) -> None:
    if not idempotency:
        del lambdas.env(RECORD_STATUS)["IDEMPOTENCY_TABLE_NAME"]
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    event = state_change_event(name, "Completed", 900)
    outcomes = [lambdas.record(event) for _ in range(3)]
    if idempotency:
        # Powertools answers redeliveries with the first result, without touching the audit table.
        assert outcomes == [outcomes[0]] * 3 and outcomes[0]["emailed"]
        keys = lambdas.emulated.client("dynamodb").scan(TableName=lambdas.idempotency_table)["Items"]
        assert len(keys) == 1 and keys[0]["status"]["S"] == "COMPLETED"
    else:
        assert [(o["outcome"], o["emailed"]) for o in outcomes] == [
            ("transition", True),
            ("ignored", False),
            ("ignored", False),
        ]
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert len(emails) == 1 and emails[0]["attributes"]["status"] == "Completed"


def test_the_same_change_under_new_event_ids_sends_one_email(lambdas: Lambdas) -> None:
    """Idempotency keys on the event id; a redelivery with a new id is caught by the conditional update."""
    name = new_name()
    lambdas.finished_job(name, "Failed")
    for _ in range(3):
        lambdas.record(state_change_event(name, "Failed", 300, failure_reason="AlgorithmError: boom"))
    assert len(lambdas.emulated.read_inbox(lambdas.inbox)) == 1


def test_out_of_order_completed_before_in_progress_stays_completed(lambdas: Lambdas) -> None:
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    completed = lambdas.record(state_change_event(name, "Completed", 900))
    late = lambdas.record(state_change_event(name, "InProgress", 10, secondary="Training"))
    also_late = lambdas.record(state_change_event(name, "Stopping", 950))  # newer time, lower rank
    assert completed["outcome"] == "transition"
    assert late["outcome"] == also_late["outcome"] == "ignored"
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert (
        record is not None and record["status"] == "Completed" and record["secondary_status"] == "Completed"
    )
    assert record["metrics"] == METRICS
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["Completed"], "no stale email after Completed"


def test_an_event_before_the_first_record_creates_it_from_the_tags(lambdas: Lambdas) -> None:
    name = new_name()
    lambdas.record(state_change_event(name, "InProgress", 10, secondary="Starting"))
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["status"] == "InProgress" and record["commit_id"] == COMMIT
    assert record["data_version"] == "abcdef012345" and record["trigger"] == "push"
    assert record["pipeline_execution_id"] == name.removeprefix(PREFIX)
    # start-training's write arrives later: it fills gaps and leaves the status alone.
    first_record(lambdas, name)
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["status"] == "InProgress" and record["status_rank"] == 1
    assert record["data_versions"] == {"datasets/train/a.csv": "v1"}
    assert record["data_version"] == "abcdef012345"  # the tag is what the job actually carries
    assert len(lambdas.emulated.read_inbox(lambdas.inbox)) == 1


def test_a_failed_job_carries_its_reason_into_the_record_and_the_email(lambdas: Lambdas) -> None:
    name = new_name()
    lambdas.training.failure = "ValueError: max_depth must be >= 0, got -1"
    reason = f"AlgorithmError: {lambdas.training.failure}"
    first_record(lambdas, name)
    lambdas.finished_job(name, "Failed")
    lambdas.record(state_change_event(name, "Failed", 300, failure_reason=reason))
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Failed" and record["failure_reason"] == reason
    (email,) = lambdas.emulated.read_inbox(lambdas.inbox)
    assert email["attributes"]["status"] == "Failed"
    assert email["subject"].startswith(f"[mlpipe/test] Training Failed: {name[:24]}")
    assert f"Reason:        {reason}" in email["body"]


def test_a_stopped_job_is_recorded_without_a_failure_reason(lambdas: Lambdas) -> None:
    name = new_name()
    lambdas.finished_job(name, "Stopped")
    lambdas.record(state_change_event(name, "Stopped", 300))
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Stopped" and "failure_reason" not in record


# -- issue 9 B1: the terminal email is never lost, under any single fault at any call boundary -----------------
def lost_email_scenario(lambdas: Lambdas, by_operation: dict[str, list[str | None]]) -> list[dict[str, Any]]:
    """One Completed event; the invocation meets the planned fault; Lambda retries the same event (same
    request id) until it succeeds. Returns the emails sent."""
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    event = state_change_event(name, "Completed", 900)
    request_id = str(uuid.uuid4())
    plan = FaultPlan(by_operation=by_operation)
    with aws.client_hooks(FaultInjector(plan).install):
        for _ in range(3):  # Lambda: the first try and two retries
            try:
                lambdas.record(event, request_id=request_id)
                break
            except (SandboxCrash, Exception):
                continue
    assert plan.injected, "the planned fault happened"
    return lambdas.emulated.read_inbox(lambdas.inbox)


@pytest.mark.parametrize(
    ("fault", "plan"),
    [
        ("the sandbox dies after the claim, before the publish", {"sns.Publish": ["crash_before"]}),
        (
            "the publish fails after all of botocore's retries",
            {"sns.Publish": ["server_error"] * ALL_ATTEMPTS},
        ),
        # UpdateItem #1 is the status, #2 the notification lease.
        (
            "the claim is applied but its response is lost",
            {"dynamodb.UpdateItem": [None, "applied_then_drop"]},
        ),
        (
            "the sandbox dies right after the claim was applied",
            {"dynamodb.UpdateItem": [None, "crash_after"]},
        ),
    ],
)
def test_the_completed_email_survives_a_fault_between_claim_and_publish(
    fault: str, plan: dict[str, list[str | None]], lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    del lambdas.env(RECORD_STATUS)["IDEMPOTENCY_TABLE_NAME"]  # the conditional writes alone must hold
    emails = lost_email_scenario(lambdas, plan)
    assert [e["attributes"]["status"] for e in emails] == ["Completed"], fault


def test_a_lease_left_by_a_dead_invocation_expires_and_a_redrive_sends_the_email(lambdas: Lambdas) -> None:
    """A different invocation (a DLQ redrive) waits while the lease runs, then takes it over."""
    import time_machine

    del lambdas.env(RECORD_STATUS)["IDEMPOTENCY_TABLE_NAME"]
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    event = state_change_event(name, "Completed", 900)
    crash = FaultInjector(FaultPlan(by_operation={"sns.Publish": ["crash_before"]}))
    with aws.client_hooks(crash.install), pytest.raises(SandboxCrash):
        lambdas.record(event, request_id="first-invocation")
    with pytest.raises(audit.LeaseHeld):
        lambdas.record(event, request_id="redrive-too-early")
    with time_machine.travel(audit.time.time() + audit.LEASE_SECONDS + 1, tick=True):
        result = lambdas.record(event, request_id="redrive-later")
    assert result["emailed"]
    assert [e["attributes"]["status"] for e in lambdas.emulated.read_inbox(lambdas.inbox)] == ["Completed"]


def test_a_secondary_status_change_refreshes_quietly(lambdas: Lambdas) -> None:
    name = new_name()
    lambdas.record(state_change_event(name, "InProgress", 10, secondary="Starting"))
    refreshed = lambdas.record(state_change_event(name, "InProgress", 60, secondary="Training"))
    older = lambdas.record(state_change_event(name, "InProgress", 30, secondary="Downloading"))
    assert refreshed["outcome"] == "refreshed" and older["outcome"] == "ignored"
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["secondary_status"] == "Training"
    assert len(lambdas.emulated.read_inbox(lambdas.inbox)) == 1


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
def test_a_malformed_event_raises_and_writes_nothing(event: Any, lambdas: Lambdas) -> None:
    with pytest.raises(BadInputError):
        lambdas.record(event)
    assert lambdas.emulated.scan(lambdas.table) == []
    assert lambdas.emulated.read_inbox(lambdas.inbox) == []


def test_a_job_outside_the_prefix_is_ignored(lambdas: Lambdas) -> None:
    result = lambdas.record(state_change_event("someone-elses-job", "Completed", 10))
    assert result["outcome"] == "not-ours"
    assert lambdas.emulated.scan(lambdas.table) == []


def test_configuration_error_names_the_variable(lambdas: Lambdas) -> None:
    del lambdas.env(RECORD_STATUS)["TOPIC_ARN"]
    with pytest.raises(Exception, match="TOPIC_ARN"):
        lambdas.record(state_change_event(new_name(), "Completed", 10))


def test_an_unreachable_idempotency_table_does_not_stop_the_record(lambdas: Lambdas) -> None:
    lambdas.env(RECORD_STATUS)["IDEMPOTENCY_TABLE_NAME"] = "no-such-table"
    name = new_name()
    lambdas.finished_job(name)
    event = state_change_event(name, "Completed", 900)
    first, second = lambdas.record(event), lambdas.record(event)
    assert first["emailed"] and not second["emailed"]
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Completed"
    assert len(lambdas.emulated.read_inbox(lambdas.inbox)) == 1


def test_a_spot_job_records_and_emails_its_savings_from_describe_training_job(lambdas: Lambdas) -> None:
    """Issue 11 part 3: 1 - BillableTimeInSeconds / TrainingTimeInSeconds, from DescribeTrainingJob (the
    event has neither)."""
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name, trained_seconds=754, spot_billable_seconds=300)
    lambdas.record(state_change_event(name, "Completed", 900))
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["use_spot"] is True
    assert (record["billable_seconds"], record["training_seconds"]) == (300, 754)
    assert record["spot_savings"] == pytest.approx(1 - 300 / 754, abs=1e-4)
    (email,) = [
        e for e in lambdas.emulated.read_inbox(lambdas.inbox) if e["attributes"]["status"] == "Completed"
    ]
    assert "Spot:          60% saved by managed spot (billed 300 s of 754 s trained)" in email["body"]
    assert "Instance:      1 x ml.m5.large (managed spot)" in email["body"]


def test_an_on_demand_job_has_no_spot_line(lambdas: Lambdas) -> None:
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    lambdas.record(state_change_event(name, "Completed", 900))
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and "spot_savings" not in record
    (email,) = lambdas.emulated.read_inbox(lambdas.inbox)
    assert "Spot:" not in email["body"]


# -- issue 10: the task, objective and classes reach the record and the email ---------------------------------
MODEL_META = {
    "format": 1,
    "task": "classification",
    "task_source": "target",
    "task_reason": "3 distinct string labels",
    "target": "species",
    "classes": ["setosa", "versicolor", "virginica"],
    "feature_names": ["a", "b"],
    "model_name": "xgboost",
    "model": {"framework": "xgboost", "objective": "multi:softprob", "num_round": 12},
    "final_metrics_channel": "test",
}


def test_a_completed_job_records_and_emails_its_task_objective_and_classes(lambdas: Lambdas) -> None:
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    archive = output_archive({"model-meta.json": json.dumps(MODEL_META).encode()})
    lambdas.emulated.put_objects(lambdas.model_bucket, {f"models/{name}/output/output.tar.gz": archive})
    assert lambdas.record(state_change_event(name, "Completed", 900))["emailed"]

    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["model_meta"] == {
        "task": "classification",
        "task_source": "target",
        "objective": "multi:softprob",
        "model_name": "xgboost",
        "final_metrics_channel": "test",
        "classes": ["setosa", "versicolor", "virginica"],
        "num_classes": 3,
    }
    (email,) = lambdas.emulated.read_inbox(lambdas.inbox)
    assert "Task:          classification, objective multi:softprob" in email["body"]
    assert "Classes:       3: setosa, versicolor, virginica" in email["body"]
    assert "Final metric:  validation:rmse = 0.4213" in email["body"]  # no test: metrics in METRICS


@pytest.mark.parametrize(
    "archive",
    [None, b"not a gzip archive", output_archive({"other.txt": b"x"})],
    ids=["no-output-archive", "unreadable", "without-model-meta"],
)
def test_a_job_without_a_readable_model_meta_is_still_recorded_and_emailed(
    archive: bytes | None, lambdas: Lambdas
) -> None:
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    if archive is not None:
        lambdas.emulated.put_objects(lambdas.model_bucket, {f"models/{name}/output/output.tar.gz": archive})
    assert lambdas.record(state_change_event(name, "Completed", 900))["emailed"]
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Completed" and "model_meta" not in record
    (email,) = lambdas.emulated.read_inbox(lambdas.inbox)
    assert "Task:" not in email["body"]


def test_a_throttled_output_read_is_retried_and_the_record_gets_the_meta(lambdas: Lambdas) -> None:
    name = new_name()
    first_record(lambdas, name)
    lambdas.finished_job(name)
    archive = output_archive({"model-meta.json": json.dumps(MODEL_META).encode()})
    lambdas.emulated.put_objects(lambdas.model_bucket, {f"models/{name}/output/output.tar.gz": archive})
    event = state_change_event(name, "Completed", 900)
    plan = FaultPlan(by_operation={"s3.GetObject": ["throttle"] * ALL_ATTEMPTS})
    with aws.client_hooks(FaultInjector(plan).install), pytest.raises(Exception) as error:
        lambdas.record(event)
    assert aws.is_transient(error.value), error.value  # raised: Lambda retries the event
    assert lambdas.emulated.read_inbox(lambdas.inbox) == [], "nothing sent before the meta is read"
    assert lambdas.record(event)["emailed"]  # Lambda's retry
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["model_meta"]["task"] == "classification"


def test_model_meta_is_bounded_and_named_as_the_container_names_it() -> None:
    from pipeline_common import model_meta
    from sagemaker_contract.meta import META_FILE

    assert model_meta.META_FILE == META_FILE
    labels = [f"class-{i}-" + "x" * 100 for i in range(80)]
    summary = model_meta.summary({**MODEL_META, "classes": labels})
    assert summary["num_classes"] == 80 and len(summary["classes"]) == model_meta.MAX_CLASSES
    assert all(len(label) == model_meta.MAX_LABEL for label in summary["classes"])
    assert model_meta.output_archive_uri("s3://b/models/j/output/model.tar.gz") == (
        "s3://b/models/j/output/output.tar.gz"
    )
    assert model_meta.output_archive_uri("s3://b/elsewhere/model.bin") is None
