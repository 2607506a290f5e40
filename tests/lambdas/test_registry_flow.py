"""After Train: Evaluate, Register and the approval decisions, through the real handlers under their own
roles, with the local model registry and CodePipeline (issue 12's "done when" list).

Runs of one test share one model package group: the second run is judged against the first run's approved
package, exactly as two executions of the deployed pipeline are.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pipeline_common import model_package

from stacks.functions import REGISTER_MODEL
from tests.lambda_fixtures import Lambdas

FIRST = {"validation:rmse": 0.29, "train:rmse": 0.12}
WORSE = {"validation:rmse": 0.31, "train:rmse": 0.10}  # 6.9% worse than 0.29: more than the 2% allowed
BETTER = {"validation:rmse": 0.28, "train:rmse": 0.11}
BELOW_FLOOR = {"validation:rmse": 0.62, "train:rmse": 0.6}  # the floor is 0.5 (lower is better)


def emails(lambdas: Lambdas) -> list[dict[str, Any]]:
    return lambdas.emulated.read_inbox(lambdas.inbox)


def by_event(messages: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["attributes"].get("event") == event]


def approve(
    lambdas: Lambdas, arn: str, status: str = model_package.APPROVED, reason: str = "looks good"
) -> Any:
    """A person decides, through the gateway with their own IAM user; the event goes to record-approval."""
    person = lambdas.approver()
    lambdas.sagemaker_as(person).update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=reason
    )
    lambdas.deliver_package_events()
    return person


def test_first_run_is_judged_by_the_floor_alone_and_awaits_approval(lambdas: Lambdas) -> None:
    run = lambdas.run_pipeline(FIRST)
    assert run.evaluate.succeeded and run.register is not None and run.register.succeeded
    record = lambdas.record_of(run.job_name)
    assert record["gate_status"] == "Passed"
    assert record["gate"]["reason"] == "no approved model yet: validation:rmse 0.29 meets the floor 0.5"
    assert "baseline_package_arn" not in record["gate"]
    assert record["model_package_version"] == 1
    assert record["approval_status"] == model_package.PENDING
    assert run.register.output_variables["MODEL_PACKAGE_ARN"] == record["model_package_arn"]

    package = lambdas.registry.packages[record["model_package_arn"]]
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"].endswith("@" + run.image_digest), "the image by digest, not by tag"
    assert container["ModelDataUrl"] == run.train.output_variables["MODEL_ARTIFACT"]
    assert package["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv", "application/json"]
    assert package["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large"]
    metadata = package["CustomerMetadataProperties"]
    assert metadata["training-job"] == run.job_name and metadata["commit"] == record["commit_id"]
    assert (
        metadata["data-manifest"] == record["data_manifest"]
        and metadata["data-version"] == record["data_version"]
    )
    assert metadata["image-digest"] == run.image_digest and metadata["pipeline-execution"] == run.execution_id
    assert metadata["repo"] and metadata["branch"] == "main"
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert (
        statistics["S3Uri"] == record["evaluation_uri"].replace("s3://", "s3://")
        and statistics["ContentType"] == "application/json"
    )
    # The evaluation document next to the model: the metrics the next run compares with.
    bucket, _, key = record["evaluation_uri"].removeprefix("s3://").partition("/")
    assert key == f"models/{run.job_name}/evaluation.json"
    document = json.loads(lambdas.emulated.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert document["metrics"]["validation:rmse"] == 0.29 and document["quality_gate"]["status"] == "Passed"

    (registered,) = by_event(emails(lambdas), "registration")
    assert registered["attributes"]["status"] == "PendingManualApproval"
    assert registered["attributes"]["model_package_version"] == "1"
    assert "awaiting approval" in registered["subject"]
    assert f"mlpipe-runs approve {record['model_package_arn']} --reason" in registered["body"]
    assert f"mlpipe-runs reject {record['model_package_arn']} --reason" in registered["body"]


def test_a_worse_second_run_fails_the_gate_against_the_approved_package(lambdas: Lambdas) -> None:
    first = lambdas.run_pipeline(FIRST)
    first_arn = lambdas.record_of(first.job_name)["model_package_arn"]
    approve(lambdas, first_arn)
    emails(lambdas)

    second = lambdas.run_pipeline(WORSE)
    assert not second.evaluate.succeeded and second.register is None
    reason = "validation:rmse 0.31 is 7% worse than the approved model 0.29 (v1; allowed 2%)"
    assert second.evaluate.failure_message == f"Quality gate failed: {reason}"
    record = lambdas.record_of(second.job_name)
    assert record["gate_status"] == "Failed" and record["gate"]["reason"] == reason
    assert record["gate"]["baseline_package_arn"] == first_arn and record["gate"]["baseline_value"] == 0.29
    assert "model_package_arn" not in record
    assert len(lambdas.registry.packages) == 1, "a model that failed the gate is not registered"
    (failed,) = by_event(emails(lambdas), "quality-gate")
    assert failed["attributes"]["status"] == "Failed"
    assert "Quality gate failed" in failed["subject"] and reason in failed["body"]


def test_a_better_second_run_passes_and_is_registered_as_version_2(lambdas: Lambdas) -> None:
    first = lambdas.run_pipeline(FIRST)
    approve(lambdas, lambdas.record_of(first.job_name)["model_package_arn"])
    second = lambdas.run_pipeline(BETTER)
    assert second.evaluate.succeeded and second.register is not None and second.register.succeeded
    record = lambdas.record_of(second.job_name)
    assert record["gate"]["reason"] == (
        "validation:rmse 0.28 is 3% better than the approved model 0.29 (v1), and meets the floor 0.5"
    )
    assert record["model_package_version"] == 2 and record["approval_status"] == model_package.PENDING
    assert (
        second.evaluate.output_variables["BASELINE_PACKAGE"]
        == lambdas.record_of(first.job_name)["model_package_arn"]
    )


def test_a_first_run_below_the_floor_fails_with_the_floor_as_its_reason(lambdas: Lambdas) -> None:
    run = lambdas.run_pipeline(BELOW_FLOOR)
    assert not run.evaluate.succeeded
    assert run.evaluate.failure_message == (
        "Quality gate failed: validation:rmse 0.62 misses the floor 0.5 (lower is better); no approved model yet"
    )


def test_auto_approve_registers_an_approved_package_decided_by_the_pipeline(lambdas: Lambdas) -> None:
    config = json.loads(lambdas.env(REGISTER_MODEL)["REGISTRY_CONFIG"])
    lambdas.set_env(REGISTER_MODEL, REGISTRY_CONFIG=json.dumps({**config, "auto_approve": True}))
    run = lambdas.run_pipeline(FIRST)
    record = lambdas.record_of(run.job_name)
    assert record["approval_status"] == model_package.APPROVED
    (decision,) = record["approvals"]
    assert (
        decision["status"] == "Approved"
        and decision["reason"] == "approved when it was registered (auto_approve)"
    )
    register_role = lambdas.function(REGISTER_MODEL).role_arn.rsplit("/", 1)[-1]
    assert decision["decided_by"].startswith(f"arn:aws:sts::123456789012:assumed-role/{register_role}/")
    messages = emails(lambdas)
    assert by_event(messages, "registration") == [], "nothing awaits approval"
    (approved,) = by_event(messages, "approval")
    assert approved["attributes"]["status"] == "Approved" and "Model v1 Approved" in approved["subject"]


@pytest.mark.parametrize("status", [model_package.APPROVED, model_package.REJECTED])
def test_a_manual_decision_records_who_when_and_why_and_emails_once(lambdas: Lambdas, status: str) -> None:
    run = lambdas.run_pipeline(FIRST)
    arn = lambdas.record_of(run.job_name)["model_package_arn"]
    emails(lambdas)
    person = approve(lambdas, arn, status, reason=f"{status} after reading the evaluation")
    record = lambdas.record_of(run.job_name)
    assert record["approval_status"] == status
    (decision,) = record["approvals"]
    assert decision["decided_by"] == person.arn  # the caller's own IAM identity, as SageMaker records it
    assert decision["reason"] == f"{status} after reading the evaluation"
    assert record["approval_decided_by"] == person.arn and record["approval_reason"] == decision["reason"]
    assert decision["decided_at"] == record["approval_decided_at"]
    (email,) = emails(lambdas)
    assert email["attributes"] == {
        "event": "approval",
        "status": status,
        "job_name": run.job_name,
        "model_package_version": "1",
    }
    assert person.arn in email["body"] and decision["reason"] in email["body"]


def test_a_retried_register_never_makes_a_second_package(lambdas: Lambdas) -> None:
    run = lambdas.run_pipeline(FIRST)
    assert run.register is not None
    # The Register stage again (a retried action), as CodePipeline would invoke it: same package.
    job = lambdas.codepipeline.jobs[run.register.job_id]
    parameters = dict(job.user_parameters)
    again = lambdas.run_action(parameters, run.execution_id, spec=REGISTER_MODEL)
    assert again.succeeded
    assert again.output_variables["MODEL_PACKAGE_ARN"] == run.register.output_variables["MODEL_PACKAGE_ARN"]
    assert len(lambdas.registry.packages) == 1
    assert [e["attributes"]["event"] for e in emails(lambdas)].count("registration") == 1
