"""start-training, under its own role with IAM enforced, against the local SageMaker and CodePipeline:
first call, continuations, completion, retries after a crash, transient errors, and every bad input
ending in one CodePipeline job result with a clear message."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pipeline_common import audit, aws, data_version

from mlpipe.local.faults import FaultInjector, FaultPlan, SandboxCrash
from stacks.functions import START_TRAINING
from tests.lambda_fixtures import ALL_ATTEMPTS, METRIC_NAMES, METRICS, Lambdas, VirtualBackoff
from tests.lambdas.builders import (
    COMMIT,
    IMAGE_DIGEST,
    IMAGE_URI,
    PREFIX,
    codepipeline_event,
    user_parameters,
)


def new_execution(lambdas: Lambdas, **overrides: Any) -> tuple[str, str, dict[str, str]]:
    execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "test")
    return execution, f"{PREFIX}{execution}", user_parameters(execution, **overrides)


def one_job(lambdas: Lambdas, execution: str, parameters: Any) -> tuple[dict[str, Any], Any]:
    """One invocation of a new CodePipeline job: (handler result, job result)."""
    event = lambdas.codepipeline.new_job(execution, "start-training", parameters)
    returned = lambdas.start(event)
    return returned, lambdas.codepipeline.result(event["CodePipeline.job"]["id"])


def test_happy_path_first_call_continuations_and_completion(lambdas: Lambdas) -> None:
    lambdas.training.polls = 2  # InProgress for two describes
    execution, name, parameters = new_execution(lambdas)
    artifact = f"s3://{lambdas.model_bucket}/models/{name}/output/model.tar.gz"

    # First invocation: creates the job, writes the manifest and the first record, continues.
    first, result = one_job(lambdas, execution, parameters)
    assert first["outcome"] == "continue" and first["job_name"] == name
    assert result.succeeded and json.loads(result.continuation_token)["job_name"] == name
    request = lambdas.sagemaker._jobs[name].request
    assert request["TrainingJobName"] == name
    assert request["RoleArn"] == lambdas.env(START_TRAINING)["SAGEMAKER_ROLE_ARN"]
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE_URI and algorithm["TrainingInputMode"] == "File"
    assert {
        "Name": "validation:rmse",
        "Regex": r"METRIC validation:rmse=(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)",
    } in algorithm["MetricDefinitions"]
    # Every channel x the model's metric names (the default model's model.json, through TRAINING_CONFIG).
    assert len(algorithm["MetricDefinitions"]) == 3 * len(METRIC_NAMES) == 18
    assert {"test:rmse", "validation:auc", "train:r2"} <= {d["Name"] for d in algorithm["MetricDefinitions"]}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels == {
        channel: {
            "S3DataType": "S3Prefix",
            "S3Uri": f"s3://{lambdas.data_bucket}/datasets/{channel}/",
            "S3DataDistributionType": "FullyReplicated",
        }
        for channel in ("train", "validation")
    }
    kms = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    assert request["OutputDataConfig"] == {
        "S3OutputPath": f"s3://{lambdas.model_bucket}/models/",
        "KmsKeyId": kms,
    }
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.m5.large",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
        "VolumeKmsKeyId": kms,
    }
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert request["HyperParameters"] == {"max_depth": "6", "eta": "0.2"}
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {
        "commit": COMMIT,
        "repo": "example-org/ml-build-train-pipeline",
        "branch": "main",
        "pipeline-execution": execution,
        "trigger": "push",
        "data-version": record["data_version"],
        "image-digest": IMAGE_DIGEST,
    }

    # The first audit record, with every field known at this point.
    assert record["status"] == "InProgress" and record["status_rank"] == audit.CREATED_RANK
    assert record["job_arn"] == f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}"
    assert record["commit_id"] == COMMIT and record["branch"] == "main"
    assert record["repo"] == "example-org/ml-build-train-pipeline"
    assert record["data_bucket"] == lambdas.data_bucket and record["data_prefix"] == "datasets/"
    assert record["data_versions"] == lambdas.data_versions  # folder markers are not data
    assert all(version != "null" for version in record["data_versions"].values())
    assert re.fullmatch(r"[0-9a-f]{12}", record["data_version"])
    assert record["data_object_count"] == 3
    manifest_key = f"models/{name}/{data_version.MANIFEST_NAME}"
    assert record["data_manifest"] == f"s3://{lambdas.model_bucket}/{manifest_key}"
    manifest = json.loads(
        lambdas.emulated.client("s3").get_object(Bucket=lambdas.model_bucket, Key=manifest_key)["Body"].read()
    )
    assert manifest["hash"] == record["data_version"]
    assert {o["key"]: o["version_id"] for o in manifest["objects"]} == lambdas.data_versions
    assert record["image_uri"] == IMAGE_URI and record["image_digest"] == IMAGE_DIGEST
    assert record["hyperparameters"] == {"max_depth": "6", "eta": "0.2"}
    assert record["instance_type"] == "ml.m5.large" and record["instance_count"] == 1
    assert record["pipeline_execution_id"] == execution and record["trigger"] == "push"
    assert record["pipeline_name"] == "TrainingPipeline-test"
    assert record["created_at"].endswith("+00:00") and record["updated_at"].endswith("+00:00")

    # Continuations while it runs: the same token goes back, each in a new CodePipeline job.
    token = result.continuation_token
    for _ in range(2):
        returned, result = one_job(lambdas, execution, parameters)
        assert returned["outcome"] == "continue" and "InProgress" in returned["message"]
        assert result.continuation_token == token

    # Completion: output variables, no token.
    done, result = one_job(lambdas, execution, parameters)
    assert done["outcome"] == "succeeded"
    assert result.succeeded and result.continuation_token is None
    assert result.output_variables == {"MODEL_ARTIFACT": artifact, "TRAINING_JOB_NAME": name}
    assert lambdas.training.started == [lambdas.sagemaker._jobs[name].container_name]  # one job
    assert [r["job_name"] for r in lambdas.emulated.scan(lambdas.table)] == [name]


def test_a_crash_between_create_and_record_write_is_retried_into_the_same_job(
    lambdas: Lambdas, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution, name, parameters = new_execution(lambdas)
    event = lambdas.codepipeline.new_job(execution, "start-training", parameters)
    real_create_record = audit.create_record
    crashes = iter([True])

    def crash_once(table: str, record: dict[str, Any]) -> bool:
        if next(crashes, False):
            raise SandboxCrash("the sandbox died after CreateTrainingJob")
        return real_create_record(table, record)

    monkeypatch.setattr(audit, "create_record", crash_once)
    with pytest.raises(SandboxCrash):
        lambdas.start(event)
    job_id = event["CodePipeline.job"]["id"]
    assert lambdas.codepipeline.result(job_id) is None and lambdas.emulated.scan(lambdas.table) == []

    # Lambda retries the asynchronous invocation with the same event: ResourceInUse, and it carries on.
    retried = lambdas.start(event)
    assert retried["outcome"] == "continue" and retried["job_name"] == name
    assert len(lambdas.training.started) == 1, "one job: the second CreateTrainingJob met ResourceInUse"
    (record,) = lambdas.emulated.scan(lambdas.table)
    assert record["job_name"] == name and record["commit_id"] == COMMIT
    assert record["data_versions"] == lambdas.data_versions
    assert lambdas.codepipeline.result(job_id).succeeded


def test_a_retry_trains_on_and_records_the_data_the_first_attempt_saw(
    lambdas: Lambdas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest pins the data version per execution: an upload between two attempts changes nothing."""
    execution, name, parameters = new_execution(lambdas)
    event = lambdas.codepipeline.new_job(execution, "start-training", parameters)
    monkeypatch.setattr(
        audit, "create_record", lambda *a: (_ for _ in ()).throw(SandboxCrash("died before the record"))
    )
    with pytest.raises(SandboxCrash):
        lambdas.start(event)
    monkeypatch.undo()
    lambdas.emulated.put_objects(lambdas.data_bucket, {"datasets/train/part-2.csv": b"y,x1\n7,8\n"})
    lambdas.start(event)
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["data_versions"] == lambdas.data_versions
    tags = {t["Key"]: t["Value"] for t in lambdas.sagemaker._jobs[name].request["Tags"]}
    assert tags["data-version"] == record["data_version"]


def test_a_throttled_record_write_keeps_the_action_open_and_the_next_invocation_finishes(
    lambdas: Lambdas, backoff: VirtualBackoff
) -> None:
    """Issue 9 B2: a transient error after the job exists must not fail the action (the job keeps billing)."""
    execution, name, parameters = new_execution(lambdas)
    plan = FaultPlan(
        by_operation={"dynamodb.PutItem": ["throttle"] * ALL_ATTEMPTS},  # botocore's own retries run out
    )
    with aws.client_hooks(FaultInjector(plan).install):
        returned, result = one_job(lambdas, execution, parameters)
    assert returned["outcome"] == "continue" and "transient" in returned["message"]
    assert result.succeeded and json.loads(result.continuation_token)["phase"] == "start"
    assert plan.injected and all(f.operation == "PutItem" for f in plan.injected)
    assert backoff.seconds > 0, "botocore backed off between its own retries first"
    assert lambdas.emulated.get_record(lambdas.table, name) is None
    # The next invocation repeats the start: same job (ResourceInUse), the record, then waiting.
    returned, result = one_job(lambdas, execution, parameters)
    assert returned["outcome"] == "continue" and json.loads(result.continuation_token)["phase"] == "wait"
    assert len(lambdas.training.started) == 1
    assert lambdas.emulated.get_record(lambdas.table, name) is not None


def test_a_permanent_error_after_the_job_started_fails_the_action_and_stops_the_job(
    lambdas: Lambdas, monkeypatch: pytest.MonkeyPatch
) -> None:
    lambdas.training.polls = 100  # still running when the action fails
    execution, name, parameters = new_execution(lambdas)

    def denied(table: str, record: dict[str, Any]) -> bool:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad item"}}, "PutItem")

    monkeypatch.setattr(audit, "create_record", denied)
    returned, result = one_job(lambdas, execution, parameters)
    assert returned["outcome"] == "failed" and not result.succeeded
    assert lambdas.sagemaker._jobs[name].status == "Stopped", "nothing runs behind a failed action"


def test_a_second_result_for_a_job_is_logged_not_raised(
    lambdas: Lambdas, caplog: pytest.LogCaptureFixture
) -> None:
    lambdas.training.polls = 100
    execution, name, parameters = new_execution(lambdas)
    event = lambdas.codepipeline.new_job(execution, "start-training", parameters)
    lambdas.start(event)
    again = lambdas.start(event)  # the same job id again: its result was already taken
    assert again["outcome"] == "continue"
    assert "already has a result" in caplog.text
    assert lambdas.sagemaker._jobs[name].status == "InProgress", "the execution is running: the job stays"


def test_a_result_for_an_ended_execution_stops_the_job_behind_it(lambdas: Lambdas) -> None:
    lambdas.training.polls = 100
    execution, name, parameters = new_execution(lambdas)
    event = lambdas.codepipeline.new_job(execution, "start-training", parameters)
    lambdas.codepipeline.time_out(event["CodePipeline.job"]["id"])  # no result in time: the action failed
    lambdas.start(event)  # e.g. a DLQ redrive, long after
    assert lambdas.sagemaker._jobs[name].status == "Stopped"


def failure_of(lambdas: Lambdas, execution: str, parameters: Any, token: str | None = None) -> Any:
    event = codepipeline_event(parameters, token)
    job = lambdas.codepipeline.new_job(execution, "start-training", {})
    event["CodePipeline.job"]["id"] = job["CodePipeline.job"]["id"]
    lambdas.start(event)
    result = lambdas.codepipeline.result(job["CodePipeline.job"]["id"])
    assert result is not None and not result.succeeded
    return result


def test_missing_user_parameters_fail_the_action_naming_the_keys(lambdas: Lambdas) -> None:
    execution, _, _ = new_execution(lambdas)
    parameters = user_parameters(execution, commit_id=None, repo="#{Source.FullRepositoryName}")
    result = failure_of(lambdas, execution, parameters)
    assert "commit_id" in result.failure_message and "repo" in result.failure_message
    assert "image_uri" not in result.failure_message.split("missing")[1].split("(")[0]
    assert lambdas.emulated.scan(lambdas.table) == [] and lambdas.training.started == []


@pytest.mark.parametrize("parameters", ["not json {", None, '["a list"]'])
def test_malformed_user_parameters_fail_the_action(parameters: Any, lambdas: Lambdas) -> None:
    execution, _, _ = new_execution(lambdas)
    assert "UserParameters" in failure_of(lambdas, execution, parameters).failure_message


def test_unknown_job_on_continuation_is_a_clear_failure(lambdas: Lambdas) -> None:
    execution, _, parameters = new_execution(lambdas)
    token = json.dumps({"v": 2, "job_name": f"{PREFIX}gone", "phase": "wait"})
    message = failure_of(lambdas, execution, parameters, token).failure_message
    assert f"{PREFIX}gone" in message and "does not exist" in message


def test_a_garbled_continuation_token_is_a_clear_failure(lambdas: Lambdas) -> None:
    execution, _, parameters = new_execution(lambdas)
    assert "continuation token" in failure_of(lambdas, execution, parameters, "{not json").failure_message


def test_a_failed_job_fails_the_action_with_its_reason(lambdas: Lambdas) -> None:
    lambdas.training.outcome = "fail"
    execution, name, parameters = new_execution(lambdas)
    result = lambdas.run_action(parameters, execution)
    assert not result.succeeded
    assert lambdas.training.failure in result.failure_message and name in result.failure_message
    assert lambdas.codepipeline.executions[execution].status == "Failed"


def test_a_stopped_job_fails_the_action(lambdas: Lambdas) -> None:
    lambdas.training.polls = 100
    execution, name, parameters = new_execution(lambdas)
    one_job(lambdas, execution, parameters)
    lambdas.sagemaker.stop_training_job(TrainingJobName=name)  # e.g. stopped in the console
    _, result = one_job(lambdas, execution, parameters)
    assert not result.succeeded and "Stopped" in result.failure_message


def test_configuration_error_names_the_variable(lambdas: Lambdas) -> None:
    del lambdas.env(START_TRAINING)["SAGEMAKER_ROLE_ARN"]
    execution, _, parameters = new_execution(lambdas)
    result = failure_of(lambdas, execution, parameters)
    assert "SAGEMAKER_ROLE_ARN" in result.failure_message


def test_no_training_data_fails_before_creating_a_job_or_a_manifest(lambdas: Lambdas) -> None:
    lambdas.env(START_TRAINING)["DATA_PREFIX"] = "empty/"
    execution, _, parameters = new_execution(lambdas)
    assert "no training data" in failure_of(lambdas, execution, parameters).failure_message
    assert lambdas.training.started == []
    listing = lambdas.emulated.client("s3").list_objects_v2(Bucket=lambdas.model_bucket, Prefix="models/")
    assert listing.get("KeyCount", 0) == 0, "uploading data and retrying must be able to pin it"


def test_a_test_channel_is_given_to_the_job_only_when_it_has_objects(lambdas: Lambdas) -> None:
    execution, name, parameters = new_execution(lambdas)
    one_job(lambdas, execution, parameters)
    assert [c["ChannelName"] for c in lambdas.sagemaker._jobs[name].request["InputDataConfig"]] == [
        "train",
        "validation",
    ]
    lambdas.emulated.put_objects(
        lambdas.data_bucket, {"datasets/test/": b"", "datasets/test/holdout.csv": b"y,x1\n7,8\n"}
    )
    execution, name, parameters = new_execution(lambdas)
    one_job(lambdas, execution, parameters)
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in lambdas.sagemaker._jobs[name].request["InputDataConfig"]
    }
    assert list(channels) == ["train", "validation", "test"]
    assert channels["test"] == f"s3://{lambdas.data_bucket}/datasets/test/"
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and "datasets/test/holdout.csv" in record["data_versions"]


@pytest.mark.parametrize("trigger", ["", "#{variables.TRIGGER}", None])
def test_an_empty_or_unresolved_trigger_defaults_to_push(trigger: Any, lambdas: Lambdas) -> None:
    execution, name, parameters = new_execution(lambdas, trigger=trigger)
    one_job(lambdas, execution, parameters)
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["trigger"] == "push"


def test_data_upload_trigger_is_recorded(lambdas: Lambdas) -> None:
    execution, name, parameters = new_execution(lambdas, trigger="data-upload")
    one_job(lambdas, execution, parameters)
    assert {"Key": "trigger", "Value": "data-upload"} in lambdas.sagemaker._jobs[name].request["Tags"]
    assert lambdas.emulated.get_record(lambdas.table, name)["trigger"] == "data-upload"  # type: ignore[index]


def test_if_no_result_can_be_reported_the_invocation_raises_for_lambda_to_retry(lambdas: Lambdas) -> None:
    execution, _, _ = new_execution(lambdas)
    event = codepipeline_event(user_parameters(execution, commit_id=""), job_id=str(uuid.uuid4()))
    with pytest.raises(ClientError, match="JobNotFoundException"):
        lambdas.start(event)


def test_an_event_that_is_not_a_codepipeline_job_raises(lambdas: Lambdas) -> None:
    with pytest.raises(Exception, match="CodePipeline job event"):
        lambdas.start({"detail": {}})


def test_a_large_dataset_keeps_the_record_small_and_the_manifest_whole(lambdas: Lambdas) -> None:
    """Issue 9 A7: beyond a few thousand objects data_versions would pass DynamoDB's 400 KB item limit. Past
    the inline limit the record keeps only the manifest's URI, hash and count, whatever the count."""
    count = data_version.INLINE_VERSION_LIMIT + 20
    s3 = lambdas.emulated.client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(
                    Bucket=lambdas.data_bucket, Key=f"datasets/train/shard-{i:05d}.csv", Body=b"y\n1\n"
                ),
                range(count),
            )
        )
    execution, name, parameters = new_execution(lambdas)
    returned, result = one_job(lambdas, execution, parameters)
    assert returned["outcome"] == "continue", result.failure_message
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and "data_versions" not in record and record["data_object_count"] == count + 3
    assert len(json.dumps(record)) < 4096
    key = f"models/{name}/{data_version.MANIFEST_NAME}"
    manifest = json.loads(
        lambdas.emulated.client("s3").get_object(Bucket=lambdas.model_bucket, Key=key)["Body"].read()
    )
    assert len(manifest["objects"]) == count + 3 and manifest["hash"] == record["data_version"]


def test_metrics_of_a_completed_job_reach_the_record_from_describe(lambdas: Lambdas) -> None:
    execution, name, parameters = new_execution(lambdas)
    result = lambdas.run_action(parameters, execution)
    assert result.succeeded
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Completed" and record["metrics"] == METRICS
