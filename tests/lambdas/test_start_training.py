"""start-training: first call, continuations, completion, retries after a crash, and every bad input ends
in a CodePipeline job result with a clear message."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY
from pipeline_common import audit
from start_training import handler

from tests.conftest import Emulated
from tests.lambda_fixtures import StartEnv
from tests.lambdas.builders import (
    COMMIT,
    IMAGE_DIGEST,
    IMAGE_URI,
    PREFIX,
    codepipeline_event,
    describe_response,
    job_arn,
    user_parameters,
)

METRICS = {"validation:rmse": 0.4213, "train:rmse": 0.301}


def new_job() -> tuple[str, str]:
    execution = str(uuid.uuid4())
    return execution, f"{PREFIX}{execution}"


def test_happy_path_first_call_two_continuations_and_completion(
    start_env: StartEnv, stub: Any, clients: Any, emulated: Emulated, lambda_context: Any
) -> None:
    execution, name = new_job()
    artifact = f"s3://models-bucket/models/{name}/output/model.tar.gz"
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_response("create_training_job", {"TrainingJobArn": job_arn(name)})
    for status, secondary in (("InProgress", "Downloading"), ("InProgress", "Training")):
        sagemaker.stubber.add_response(
            "describe_training_job", describe_response(name, status, secondary), {"TrainingJobName": name}
        )
    sagemaker.stubber.add_response(
        "describe_training_job",
        describe_response(name, "Completed", "Completed", metrics=METRICS, model_artifact=artifact),
        {"TrainingJobName": name},
    )
    for _ in range(4):
        codepipeline.stubber.add_response("put_job_success_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})

    # First invocation: creates the job, writes the first record, continues.
    first = handler.lambda_handler(codepipeline_event(user_parameters(execution)), lambda_context)
    assert first["outcome"] == "continue" and first["job_name"] == name
    (request,) = sagemaker.recorder.named("create_training_job")
    assert request["TrainingJobName"] == name
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/mlpipe-sagemaker"
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE_URI and algorithm["TrainingInputMode"] == "File"
    assert {
        "Name": "validation:rmse",
        "Regex": r"METRIC validation:rmse=(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)",
    } in (algorithm["MetricDefinitions"])
    assert len(algorithm["MetricDefinitions"]) == 12
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels == {
        "train": {
            "S3DataType": "S3Prefix",
            "S3Uri": f"s3://{start_env.bucket}/datasets/train/",
            "S3DataDistributionType": "FullyReplicated",
        },
        "validation": {
            "S3DataType": "S3Prefix",
            "S3Uri": f"s3://{start_env.bucket}/datasets/validation/",
            "S3DataDistributionType": "FullyReplicated",
        },
    }
    kms = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://models-bucket/models/", "KmsKeyId": kms}
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.m5.large",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
        "VolumeKmsKeyId": kms,
    }
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert request["HyperParameters"] == {"max_depth": "6", "eta": "0.2"}
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    record = emulated.get_record(start_env.table, name)
    assert record is not None
    assert tags == {
        "commit": COMMIT,
        "repo": "example-org/ml-build-train-pipeline",
        "branch": "main",
        "pipeline-execution": execution,
        "trigger": "push",
        "data-version": record["data_version"],
        "image-digest": IMAGE_DIGEST,
    }

    (success,) = codepipeline.recorder.named("put_job_success_result")
    token = success["continuationToken"]
    assert json.loads(token)["job_name"] == name
    assert success["executionDetails"]["externalExecutionId"] == name

    # The first audit record, with every field known at this point.
    assert record["status"] == "InProgress" and record["status_rank"] == audit.CREATED_RANK
    assert record["job_arn"] == job_arn(name)
    assert record["commit_id"] == COMMIT and record["branch"] == "main"
    assert record["repo"] == "example-org/ml-build-train-pipeline"
    assert record["data_bucket"] == start_env.bucket and record["data_prefix"] == "datasets/"
    assert record["data_versions"] == start_env.versions  # folder markers are not data
    assert all(version != "null" for version in record["data_versions"].values())
    assert re.fullmatch(r"[0-9a-f]{12}", record["data_version"])
    assert record["image_uri"] == IMAGE_URI and record["image_digest"] == IMAGE_DIGEST
    assert record["hyperparameters"] == {"max_depth": "6", "eta": "0.2"}
    assert record["instance_type"] == "ml.m5.large" and record["instance_count"] == 1
    assert record["pipeline_execution_id"] == execution and record["trigger"] == "push"
    assert record["pipeline_name"] == "TrainingPipeline-test"
    assert record["created_at"].endswith("+00:00") and record["updated_at"].endswith("+00:00")

    # Two continuations while it runs: the same token goes back.
    for expected_secondary in ("Downloading", "Training"):
        result = handler.lambda_handler(codepipeline_event(user_parameters(execution), token), lambda_context)
        assert result["outcome"] == "continue" and expected_secondary in result["message"]
    continued = codepipeline.recorder.named("put_job_success_result")[1:3]
    assert [c["continuationToken"] for c in continued] == [token, token]

    # Completion: output variables, no token.
    done = handler.lambda_handler(codepipeline_event(user_parameters(execution), token), lambda_context)
    assert done["outcome"] == "succeeded"
    final = codepipeline.recorder.named("put_job_success_result")[3]
    assert "continuationToken" not in final
    assert final["outputVariables"] == {"MODEL_ARTIFACT": artifact, "TRAINING_JOB_NAME": name}
    assert len(sagemaker.recorder.named("create_training_job")) == 1
    assert emulated.scan(start_env.table) == [emulated.get_record(start_env.table, name)]


def test_retry_after_a_crash_between_create_and_record_write(
    start_env: StartEnv,
    stub: Any,
    clients: Any,
    emulated: Emulated,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    execution, name = new_job()
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    # Attempt 1: the job is created, then the Lambda dies before the record is written.
    sagemaker.stubber.add_response("create_training_job", {"TrainingJobArn": job_arn(name)})
    codepipeline.stubber.add_response("put_job_failure_result", {}, {"jobId": ANY, "failureDetails": ANY})
    # Attempt 2: SageMaker refuses a second job of that name; the handler carries on with the first.
    sagemaker.stubber.add_client_error(
        "create_training_job",
        service_error_code="ResourceInUse",
        service_message=f"Training job names must be unique within an AWS account and region, and a training job with this name already exists ({job_arn(name)})",
        http_status_code=400,
    )
    sagemaker.stubber.add_response(
        "describe_training_job", describe_response(name, "InProgress", "Training"), {"TrainingJobName": name}
    )
    sagemaker.stubber.add_response("list_tags", {"Tags": []}, {"ResourceArn": job_arn(name)})
    codepipeline.stubber.add_response("put_job_success_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})

    real_create_record = audit.create_record
    crashes = iter([True])

    def crash_once(table: str, record: dict[str, Any]) -> bool:
        if next(crashes, False):
            raise TimeoutError("Task timed out after 60.00 seconds")
        return real_create_record(table, record)

    monkeypatch.setattr(audit, "create_record", crash_once)

    failed = handler.lambda_handler(codepipeline_event(user_parameters(execution)), lambda_context)
    assert failed["outcome"] == "failed" and "timed out" in failed["message"]
    assert emulated.scan(start_env.table) == []

    retried = handler.lambda_handler(codepipeline_event(user_parameters(execution)), lambda_context)
    assert retried["outcome"] == "continue" and retried["job_name"] == name
    creates = sagemaker.recorder.named("create_training_job")
    assert [c["TrainingJobName"] for c in creates] == [name, name]  # same deterministic name: no second job
    records = emulated.scan(start_env.table)
    assert len(records) == 1
    assert records[0]["job_name"] == name and records[0]["commit_id"] == COMMIT
    assert records[0]["job_arn"] == job_arn(name) and records[0]["data_versions"] == start_env.versions
    (success,) = codepipeline.recorder.named("put_job_success_result")
    assert json.loads(success["continuationToken"])["job_name"] == name


def test_a_second_record_write_for_an_existing_record_fills_gaps_and_does_not_fail(
    start_env: StartEnv, emulated: Emulated
) -> None:
    name = f"{PREFIX}{uuid.uuid4()}"
    # record-status got there first (event before the first record) and wrote a Completed record.
    emulated.client("dynamodb").put_item(
        TableName=start_env.table,
        Item={
            "job_name": {"S": name},
            "status": {"S": "Completed"},
            "status_rank": {"N": "3"},
            "commit_id": {"S": COMMIT},
        },
    )
    created = audit.create_record(
        start_env.table,
        {"job_name": name, "status": "InProgress", "status_rank": 0, "commit_id": "other", "trigger": "push"},
    )
    assert created is False
    record = emulated.get_record(start_env.table, name)
    assert record == {
        "job_name": name,
        "status": "Completed",
        "status_rank": 3,
        "commit_id": COMMIT,
        "trigger": "push",
    }


def failure_of(codepipeline: Any) -> dict[str, str]:
    (failure,) = codepipeline.recorder.named("put_job_failure_result")
    return failure["failureDetails"]


def test_missing_user_parameters_fail_the_action_naming_the_keys(
    start_env: StartEnv, stub: Any, clients: Any, emulated: Emulated, lambda_context: Any
) -> None:
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"codepipeline": codepipeline.recorder, "sagemaker": stub("sagemaker").recorder})
    parameters = user_parameters("exec-1", commit_id=None, repo="#{Source.FullRepositoryName}")
    result = handler.lambda_handler(codepipeline_event(parameters), lambda_context)
    assert result["outcome"] == "failed"
    details = failure_of(codepipeline)
    assert details["type"] == "ConfigurationError"
    assert "commit_id" in details["message"] and "repo" in details["message"]
    assert "image_uri" not in details["message"].split("missing")[1].split("(")[0]
    assert emulated.scan(start_env.table) == []


@pytest.mark.parametrize("parameters", ["not json {", None, '["a list"]'])
def test_malformed_user_parameters_fail_the_action(
    parameters: Any, start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"codepipeline": codepipeline.recorder})
    handler.lambda_handler(codepipeline_event(parameters), lambda_context)
    assert "UserParameters" in failure_of(codepipeline)["message"]


def test_unknown_job_on_continuation_is_a_clear_failure(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    name = f"{PREFIX}gone"
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_client_error(
        "describe_training_job",
        service_error_code="ValidationException",
        service_message="Requested resource not found.",
    )
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})
    token = json.dumps({"v": 1, "job_name": name, "data_version": "x"})
    result = handler.lambda_handler(codepipeline_event(user_parameters("e"), token), lambda_context)
    assert result["outcome"] == "failed"
    message = failure_of(codepipeline)["message"]
    assert name in message and "does not exist" in message


def test_a_garbled_continuation_token_is_a_clear_failure(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"codepipeline": codepipeline.recorder})
    handler.lambda_handler(codepipeline_event(user_parameters("e"), "{not json"), lambda_context)
    assert "continuation token" in failure_of(codepipeline)["message"]


def test_a_failed_job_fails_the_action_with_its_reason(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    _, name = new_job()
    reason = "AlgorithmError: ValueError: max_depth must be >= 0, got -1"
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_response(
        "describe_training_job", describe_response(name, "Failed", "Failed", failure_reason=reason)
    )
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})
    token = json.dumps({"v": 1, "job_name": name, "data_version": "x"})
    result = handler.lambda_handler(codepipeline_event(user_parameters("e"), token), lambda_context)
    assert result["outcome"] == "failed"
    details = failure_of(codepipeline)
    assert details["type"] == "JobFailed" and reason in details["message"] and name in details["message"]
    assert details["externalExecutionId"] == name


def test_a_stopped_job_fails_the_action(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    _, name = new_job()
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_response(
        "describe_training_job", describe_response(name, "Stopped", "MaxRuntimeExceeded")
    )
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})
    token = json.dumps({"v": 1, "job_name": name})
    handler.lambda_handler(codepipeline_event(user_parameters("e"), token), lambda_context)
    assert "Stopped" in failure_of(codepipeline)["message"]


def test_configuration_error_names_the_variable(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGEMAKER_ROLE_ARN")
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"codepipeline": codepipeline.recorder, "sagemaker": stub("sagemaker").recorder})
    handler.lambda_handler(codepipeline_event(user_parameters("e")), lambda_context)
    details = failure_of(codepipeline)
    assert details["type"] == "ConfigurationError" and "SAGEMAKER_ROLE_ARN" in details["message"]


def test_no_training_data_fails_before_creating_a_job(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_PREFIX", "empty/")
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_response("put_job_failure_result", {})
    clients({"codepipeline": codepipeline.recorder, "sagemaker": stub("sagemaker").recorder})
    handler.lambda_handler(codepipeline_event(user_parameters("e")), lambda_context)
    assert "no training data" in failure_of(codepipeline)["message"]


@pytest.mark.parametrize("trigger", ["", "#{variables.TRIGGER}", None])
def test_an_empty_or_unresolved_trigger_defaults_to_push(
    trigger: Any, start_env: StartEnv, stub: Any, clients: Any, emulated: Emulated, lambda_context: Any
) -> None:
    execution, name = new_job()
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_response("create_training_job", {"TrainingJobArn": job_arn(name)})
    codepipeline.stubber.add_response("put_job_success_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})
    handler.lambda_handler(codepipeline_event(user_parameters(execution, trigger=trigger)), lambda_context)
    record = emulated.get_record(start_env.table, name)
    assert record is not None and record["trigger"] == "push"


def test_data_upload_trigger_is_recorded(
    start_env: StartEnv, stub: Any, clients: Any, emulated: Emulated, lambda_context: Any
) -> None:
    execution, name = new_job()
    sagemaker, codepipeline = stub("sagemaker"), stub("codepipeline")
    sagemaker.stubber.add_response("create_training_job", {"TrainingJobArn": job_arn(name)})
    codepipeline.stubber.add_response("put_job_success_result", {})
    clients({"sagemaker": sagemaker.recorder, "codepipeline": codepipeline.recorder})
    handler.lambda_handler(
        codepipeline_event(user_parameters(execution, trigger="data-upload")), lambda_context
    )
    (request,) = sagemaker.recorder.named("create_training_job")
    assert {"Key": "trigger", "Value": "data-upload"} in request["Tags"]
    assert emulated.get_record(start_env.table, name)["trigger"] == "data-upload"  # type: ignore[index]


def test_if_reporting_the_failure_fails_too_the_error_is_raised(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    codepipeline = stub("codepipeline")
    codepipeline.stubber.add_client_error("put_job_failure_result", service_error_code="JobNotFoundException")
    clients({"codepipeline": codepipeline.recorder})
    with pytest.raises(ClientError, match="JobNotFoundException"):
        handler.lambda_handler(codepipeline_event(user_parameters("e", commit_id="")), lambda_context)


def test_an_event_that_is_not_a_codepipeline_job_raises(start_env: StartEnv, lambda_context: Any) -> None:
    with pytest.raises(Exception, match="CodePipeline job event"):
        handler.lambda_handler({"detail": {}}, lambda_context)


def test_the_job_results_are_valid_for_the_local_codepipeline_stand_in(
    start_env: StartEnv, stub: Any, clients: Any, lambda_context: Any
) -> None:
    """The local run answers for CodePipeline with mlpipe.local.codepipeline, validated against the API."""
    from mlpipe.local.codepipeline import LocalCodePipeline

    execution, name = new_job()
    sagemaker = stub("sagemaker")
    sagemaker.stubber.add_response("create_training_job", {"TrainingJobArn": job_arn(name)})
    sagemaker.stubber.add_response("describe_training_job", describe_response(name, "InProgress", "Training"))
    sagemaker.stubber.add_response(
        "describe_training_job",
        describe_response(name, "Completed", "Completed", model_artifact="s3://m/model.tar.gz"),
    )
    pipeline = LocalCodePipeline("TrainingPipeline-test", execution, "test")
    clients({"sagemaker": sagemaker.recorder, "codepipeline": pipeline})
    for _ in range(3):
        event = pipeline.job_event("start-training", user_parameters(execution))
        handler.lambda_handler(event, lambda_context)
    assert [r.succeeded for r in pipeline.results] == [True, True, True]
    assert pipeline.results[-1].output_variables == {
        "MODEL_ARTIFACT": "s3://m/model.tar.gz",
        "TRAINING_JOB_NAME": name,
    }
