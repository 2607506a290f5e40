"""A failed training job, across both Lambdas: the reason reaches the record, the email and CodePipeline."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from record_status import handler as record_status
from start_training import handler as start_training

from tests.conftest import Emulated
from tests.lambda_fixtures import RecordEnv, StartEnv
from tests.lambdas.builders import (
    COMMIT,
    PREFIX,
    codepipeline_event,
    describe_response,
    job_arn,
    state_change_event,
    user_parameters,
)

REASON = "AlgorithmError: ValueError: max_depth must be >= 0, got -1 (see /opt/ml/output/failure)"


def test_a_failed_job_carries_its_reason_into_the_record_the_email_and_the_pipeline(
    start_env: StartEnv,
    record_env: RecordEnv,
    stub: Any,
    clients: Any,
    emulated: Emulated,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUDIT_TABLE_NAME", record_env.table)  # both functions share the audit table
    execution = str(uuid.uuid4())
    name = f"{PREFIX}{execution}"
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_response("create_training_job", {"TrainingJobArn": job_arn(name)})
    sagemaker.stubber.add_response(
        "describe_training_job", describe_response(name, "Failed", "Failed", failure_reason=REASON)
    )
    codepipeline.stubber.add_response("put_job_success_result", {})
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})

    start_training.lambda_handler(codepipeline_event(user_parameters(execution)), lambda_context)
    token = codepipeline.recorder.named("put_job_success_result")[0]["continuationToken"]
    record_status.lambda_handler(
        state_change_event(name, "InProgress", 5, secondary="Starting"), lambda_context
    )
    record_status.lambda_handler(
        state_change_event(name, "Failed", 300, failure_reason=REASON), lambda_context
    )
    result = start_training.lambda_handler(
        codepipeline_event(user_parameters(execution), token), lambda_context
    )

    # CodePipeline
    assert result["outcome"] == "failed"
    (failure,) = codepipeline.recorder.named("put_job_failure_result")
    assert failure["failureDetails"]["type"] == "JobFailed" and REASON in failure["failureDetails"]["message"]
    # The record
    record = emulated.get_record(record_env.table, name)
    assert record is not None
    assert record["status"] == "Failed" and record["failure_reason"] == REASON
    assert record["commit_id"] == COMMIT and record["data_versions"] == start_env.versions
    # The emails: started, then failed with the reason
    emails = emulated.read_inbox(record_env.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Failed"]
    failed = emails[-1]
    assert failed["subject"].startswith(f"[mlpipe/test] Training Failed: {name[:24]}")
    assert REASON in failed["body"] and "Status:        Failed" in failed["body"]
