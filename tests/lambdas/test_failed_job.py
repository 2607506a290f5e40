"""A failed training job, across both Lambdas under their own roles: the reason reaches the record, the
email and CodePipeline. The events are the local SageMaker's own, shaped like AWS's."""

from __future__ import annotations

from stacks.functions import RECORD_STATUS, START_TRAINING
from tests.lambda_fixtures import Lambdas
from tests.lambdas.builders import COMMIT, PREFIX, user_parameters

REASON = "ValueError: max_depth must be >= 0, got -1 (see /opt/ml/output/failure)"


def test_a_failed_job_carries_its_reason_into_the_record_the_email_and_the_pipeline(lambdas: Lambdas) -> None:
    assert lambdas.env(START_TRAINING)["AUDIT_TABLE_NAME"] == lambdas.env(RECORD_STATUS)["AUDIT_TABLE_NAME"]
    lambdas.training.outcome, lambdas.training.failure, lambdas.training.polls = "fail", REASON, 1
    execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "test")
    name = f"{PREFIX}{execution}"

    result = lambdas.run_action(user_parameters(execution), execution)

    # CodePipeline
    assert not result.succeeded and REASON in result.failure_message
    assert lambdas.codepipeline.executions[execution].status == "Failed"
    # The record
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["status"] == "Failed" and record["failure_reason"] == f"AlgorithmError: {REASON}"
    assert record["commit_id"] == COMMIT and record["data_versions"] == lambdas.data_versions
    # The emails: started, then failed with the reason
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Failed"]
    failed = emails[-1]
    assert failed["subject"].startswith(f"[mlpipe/test] Training Failed: {name[:24]}")
    assert REASON in failed["body"] and "Status:        Failed" in failed["body"]
