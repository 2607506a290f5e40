"""evaluate-model and register-model under retries, crashes and missing permissions: one gate decision per
job, one package per job, found again when the record lost it, never a package for a failed gate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pipeline_common import aws, model_package

from mlpipe.local.faults import FaultInjector, FaultPlan, SandboxCrash
from stacks.functions import EVALUATE_MODEL, REGISTER_MODEL
from tests.lambda_fixtures import Lambdas, PipelineRun
from tests.lambdas.builders import user_parameters

FIRST = {"validation:rmse": 0.29, "train:rmse": 0.12}
WORSE = {"validation:rmse": 0.31, "train:rmse": 0.10}


def evaluate_again(lambdas: Lambdas, run: PipelineRun) -> Any:
    return lambdas.run_action(
        {"training_job_name": run.job_name, "pipeline_execution_id": run.execution_id},
        run.execution_id,
        spec=EVALUATE_MODEL,
    )


def register_parameters(lambdas: Lambdas, run: PipelineRun) -> dict[str, str]:
    job = next(j for j in lambdas.codepipeline.jobs.values() if j.function_name == "StartTraining")
    parameters = {k: v for k, v in job.user_parameters.items() if k != "trigger"}
    parameters.update(
        pipeline_execution_id=run.execution_id,
        training_job_name=run.job_name,
        model_artifact=run.train.output_variables["MODEL_ARTIFACT"],
        evaluation_uri=lambdas.record_of(run.job_name).get("evaluation_uri", ""),
    )
    return parameters


def test_the_gate_decides_once_even_if_the_approved_model_changes_before_a_retry(lambdas: Lambdas) -> None:
    first = lambdas.run_pipeline(FIRST)
    v1 = lambdas.record_of(first.job_name)["model_package_arn"]
    lambdas.cloud.client("sagemaker").update_model_package(ModelPackageArn=v1, ModelApprovalStatus="Approved")
    second = lambdas.run_pipeline(WORSE)
    assert not second.evaluate.succeeded
    # The approved model goes away; the retried Evaluate (floors alone would pass 0.31) keeps the first decision.
    lambdas.cloud.client("sagemaker").update_model_package(ModelPackageArn=v1, ModelApprovalStatus="Rejected")
    again = evaluate_again(lambdas, second)
    assert not again.succeeded and again.failure_message == second.evaluate.failure_message
    record = lambdas.record_of(second.job_name)
    assert record["gate"]["baseline_package_arn"] == v1
    gate_emails = [
        e
        for e in lambdas.emulated.read_inbox(lambdas.inbox)
        if e["attributes"].get("event") == "quality-gate"
    ]
    assert len(gate_emails) == 1, "the failed gate is emailed once, not once per invocation"


def test_register_refuses_a_model_that_did_not_pass_the_gate(lambdas: Lambdas) -> None:
    lambdas.run_pipeline(FIRST)
    v1 = next(iter(lambdas.registry.packages))
    lambdas.cloud.client("sagemaker").update_model_package(ModelPackageArn=v1, ModelApprovalStatus="Approved")
    worse = lambdas.run_pipeline(WORSE)
    result = lambdas.run_action(register_parameters(lambdas, worse), worse.execution_id, spec=REGISTER_MODEL)
    assert not result.succeeded and "has not passed the quality gate (gate: Failed)" in result.failure_message
    assert len(lambdas.registry.packages) == 1


def test_a_package_the_record_lost_is_found_in_the_group_not_created_again(lambdas: Lambdas) -> None:
    run = lambdas.run_pipeline(FIRST)
    record = lambdas.record_of(run.job_name)
    arn = record["model_package_arn"]
    # As if the record's update had never happened, and the ClientToken's window had passed.
    lambdas.emulated.client("dynamodb").update_item(
        TableName=lambdas.table,
        Key={"job_name": {"S": run.job_name}},
        UpdateExpression="REMOVE model_package_arn, model_package_version",
    )
    lambdas.registry._tokens.clear()
    again = lambdas.run_action(register_parameters(lambdas, run), run.execution_id, spec=REGISTER_MODEL)
    assert again.succeeded and again.output_variables["MODEL_PACKAGE_ARN"] == arn
    assert len(lambdas.registry.packages) == 1 and lambdas.record_of(run.job_name)["model_package_arn"] == arn


@pytest.mark.parametrize("kind", ["crash_after", "applied_then_drop"])
def test_a_create_applied_but_unanswered_is_not_repeated(lambdas: Lambdas, kind: str) -> None:
    """The create reached SageMaker; the invocation died (crash_after: Lambda retries the same event, and the
    listing finds the package) or saw its connection drop (botocore retries the request with the same
    ClientToken, and the registry answers with the same package)."""
    first = lambdas.run_pipeline(FIRST)
    lambdas.emulated.read_inbox(lambdas.inbox)
    parameters = register_parameters(lambdas, first)
    # A second job of the same training job's Register action, after the record forgot the package.
    lambdas.emulated.client("dynamodb").update_item(
        TableName=lambdas.table,
        Key={"job_name": {"S": first.job_name}},
        UpdateExpression="REMOVE model_package_arn, model_package_version, approval_status, emails_sent",
    )
    lambdas.registry.packages.clear()  # the first package never existed: this attempt makes it
    lambdas.registry._tokens.clear()
    injector = FaultInjector(FaultPlan(by_operation={"sagemaker.CreateModelPackage": [kind]}))
    event = lambdas.codepipeline.new_job(first.execution_id, REGISTER_MODEL.construct_id, parameters)
    with aws.client_hooks(injector.install):
        for _ in range(3):  # Lambda's asynchronous invocation: the first try and two retries, same event
            try:
                lambdas.invoke(REGISTER_MODEL, event, request_id="same-invocation")
            except SandboxCrash:
                continue
            result = lambdas.codepipeline.result(event["CodePipeline.job"]["id"])
            if result is not None and not result.continuation_token:
                break
            event = lambdas.codepipeline.new_job(first.execution_id, REGISTER_MODEL.construct_id, parameters)
    assert [f.kind for f in injector.plan.injected] == [kind]
    assert len(lambdas.registry.packages) == 1
    (arn,) = lambdas.registry.packages
    assert lambdas.record_of(first.job_name)["model_package_arn"] == arn
    registration = [
        e for e in lambdas.emulated.read_inbox(lambdas.inbox) if e["attributes"]["event"] == "registration"
    ]
    assert len(registration) == 1


def test_a_gate_on_a_metric_the_job_does_not_report_fails_with_that_reason(lambdas: Lambdas) -> None:
    gate = {"metric": "validation:auc", "direction": "maximize", "max_regression": 0.01, "floor": None}
    lambdas.set_env(EVALUATE_MODEL, QUALITY_GATE=json.dumps(gate))
    run = lambdas.run_pipeline(FIRST)
    assert not run.evaluate.succeeded
    assert (
        "validation:auc is not among the job's final metrics (train:rmse, validation:rmse)"
        in run.evaluate.failure_message
    )


def test_without_list_permission_the_gate_fails_as_a_permission_error(lambdas: Lambdas) -> None:
    """The role the template gives evaluate-model, minus sagemaker:ListModelPackages: denied, reported as
    PermissionError, never a silent pass."""
    run = lambdas.run_pipeline(FIRST)
    role = lambdas.function(EVALUATE_MODEL).role_arn
    actions = tuple(
        a for a in lambdas.cloud.deployment.role_actions(role) if a != "sagemaker:ListModelPackages"
    )
    key = f"models/{run.job_name}/evaluation.json"
    lambdas.emulated.client("s3").delete_object(Bucket=lambdas.model_bucket, Key=key)  # decide afresh
    from evaluate_model import evaluation

    job = lambdas.codepipeline.new_job(
        run.execution_id,
        EVALUATE_MODEL.construct_id,
        {"training_job_name": run.job_name, "pipeline_execution_id": run.execution_id},
    )
    with lambdas.cloud.as_role(actions, lambdas.env(EVALUATE_MODEL)):
        result = evaluation.handle(
            job["CodePipeline.job"]["id"],
            {"training_job_name": run.job_name, "pipeline_execution_id": run.execution_id},
        )
    assert result.outcome == "failed" and result.failure_type == "PermissionError"
    assert "sagemaker:ListModelPackages" in result.message


def test_the_package_spec_comes_from_the_environment(lambdas: Lambdas) -> None:
    run = lambdas.run_pipeline(FIRST)
    package = lambdas.registry.packages[lambdas.record_of(run.job_name)["model_package_arn"]]
    assert package["ModelApprovalStatus"] == model_package.PENDING
    assert (
        package["MetadataProperties"]["GeneratedBy"]
        == f"codepipeline:TrainingPipeline-test/{run.execution_id}"
    )
    assert package["ModelPackageDescription"].startswith(f"training job {run.job_name} (commit ")


def test_no_awaiting_approval_email_for_a_package_decided_before_the_retry(lambdas: Lambdas) -> None:
    """Register recorded the package (still pending) and its sandbox died before the email; a person decided
    before Lambda's retry, and the decision's event has not reached record-approval yet (EventBridge may be
    late). The retry sees the decision in the registry: no "awaiting approval" email after it."""
    execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "test")
    lambdas.training.metrics = dict(FIRST)
    origin = user_parameters(execution)
    train = lambdas.run_action(origin, execution)
    name = train.output_variables["TRAINING_JOB_NAME"]
    evaluate = lambdas.run_action(
        {"training_job_name": name, "pipeline_execution_id": execution}, execution, spec=EVALUATE_MODEL
    )
    parameters = {k: v for k, v in origin.items() if k != "trigger"}
    parameters.update(
        training_job_name=name,
        model_artifact=train.output_variables["MODEL_ARTIFACT"],
        evaluation_uri=evaluate.output_variables["EVALUATION_URI"],
    )
    event = lambdas.codepipeline.new_job(execution, REGISTER_MODEL.construct_id, parameters)
    # The first UpdateItem of Register records the package; the sandbox dies right after it.
    injector = FaultInjector(FaultPlan(by_operation={"dynamodb.UpdateItem": ["crash_after"]}))
    with aws.client_hooks(injector.install), pytest.raises(SandboxCrash):
        lambdas.invoke(REGISTER_MODEL, event, request_id="same-invocation")
    record = lambdas.record_of(name)
    assert record["approval_status"] == model_package.PENDING and "emails_sent" not in record
    lambdas.sagemaker_as(lambdas.approver()).update_model_package(
        ModelPackageArn=record["model_package_arn"], ModelApprovalStatus=model_package.APPROVED
    )
    lambdas.emulated.read_inbox(lambdas.inbox)  # Train's email
    lambdas.invoke(REGISTER_MODEL, event, request_id="same-invocation")  # Lambda's retry, same event
    result = lambdas.codepipeline.result(event["CodePipeline.job"]["id"])
    assert result is not None and result.succeeded
    assert [e["attributes"]["event"] for e in lambdas.emulated.read_inbox(lambdas.inbox)] == []
    lambdas.deliver_package_events()  # the late event: the decision is recorded and emailed
    assert lambdas.record_of(name)["approval_status"] == model_package.APPROVED
    assert [e["attributes"]["event"] for e in lambdas.emulated.read_inbox(lambdas.inbox)] == ["approval"]
