"""Events and service responses shaped like the real ones, for the Lambda tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PREFIX = "mlpipe-test-"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlpipe-trainer:0123456789ab"
IMAGE_DIGEST = "sha256:" + "d" * 64
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def user_parameters(execution_id: str, **overrides: Any) -> dict[str, str]:
    params = {
        "image_uri": IMAGE_URI,
        "image_digest": IMAGE_DIGEST,
        "commit_id": COMMIT,
        "branch": "main",
        "repo": "example-org/ml-build-train-pipeline",
        "pipeline_execution_id": execution_id,
        "trigger": "push",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def codepipeline_event(
    parameters: dict[str, Any] | str | None, continuation_token: str | None = None, job_id: str | None = None
) -> dict[str, Any]:
    """The Lambda invoke action's event, as CodePipeline sends it."""
    configuration: dict[str, Any] = {"FunctionName": "start-training"}
    if parameters is not None:
        configuration["UserParameters"] = (
            parameters if isinstance(parameters, str) else json.dumps(parameters)
        )
    data: dict[str, Any] = {
        "actionConfiguration": {"configuration": configuration},
        "inputArtifacts": [],
        "outputArtifacts": [],
        "artifactCredentials": {"accessKeyId": "a", "secretAccessKey": "s", "sessionToken": "t"},
    }
    if continuation_token:
        data["continuationToken"] = continuation_token
    return {"CodePipeline.job": {"id": job_id or str(uuid.uuid4()), "accountId": ACCOUNT, "data": data}}


def job_arn(name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"


def describe_response(
    name: str,
    status: str = "InProgress",
    secondary: str = "Training",
    failure_reason: str | None = None,
    metrics: dict[str, float] | None = None,
    model_artifact: str | None = None,
) -> dict[str, Any]:
    """A DescribeTrainingJob response (datetimes, as boto3 returns them)."""
    response: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": job_arn(name),
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "ModelArtifacts": {"S3ModelArtifacts": model_artifact or ""},
        "AlgorithmSpecification": {"TrainingImage": IMAGE_URI, "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": T0,
        "HyperParameters": {"max_depth": "6", "eta": "0.2"},
    }
    if status in ("Completed", "Failed", "Stopped"):
        response.update(
            TrainingStartTime=T0 + timedelta(seconds=60),
            TrainingEndTime=T0 + timedelta(seconds=60 + 754),
            TrainingTimeInSeconds=754,
            BillableTimeInSeconds=754,
        )
    if failure_reason:
        response["FailureReason"] = failure_reason
    if metrics:
        response["FinalMetricDataList"] = [
            {"MetricName": k, "Value": v, "Timestamp": T0 + timedelta(seconds=800)}
            for k, v in metrics.items()
        ]
    return response


def _millis(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_millis(v) for v in value]
    return value


def state_change_event(
    name: str,
    status: str,
    at_seconds: int,
    secondary: str | None = None,
    failure_reason: str | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    data_bucket: str = "data-bucket",
    data_prefix: str = "datasets/",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A SageMaker Training Job State Change event: detail ≈ DescribeTrainingJob, epoch-millisecond times,
    Tags as a map. `at_seconds` after T0 is the event's LastModifiedTime (what orders events)."""
    artifact = f"s3://models/models/{name}/output/model.tar.gz" if status == "Completed" else None
    detail = describe_response(
        name,
        status,
        secondary or status,
        failure_reason=failure_reason,
        metrics=metrics,
        model_artifact=artifact,
    )
    detail["LastModifiedTime"] = T0 + timedelta(seconds=at_seconds)
    detail["InputDataConfig"] = [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{data_bucket}/{data_prefix}train/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
    ]
    detail = _millis(detail)
    detail["Tags"] = (
        tags
        if tags is not None
        else {
            "commit": COMMIT,
            "repo": "example-org/ml-build-train-pipeline",
            "branch": "main",
            "pipeline-execution": name.removeprefix(PREFIX),
            "trigger": "push",
            "data-version": "abcdef012345",
        }
    )
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "SageMaker Training Job State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": (T0 + timedelta(seconds=at_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [job_arn(name)],
        "detail": detail,
    }


def s3_object_created(
    bucket: str, key: str, size: int = 100, version_id: str | None = "v1"
) -> dict[str, Any]:
    """An EventBridge `Object Created` event for an S3 object."""
    obj: dict[str, Any] = {"key": key, "size": size, "etag": "e" * 32, "sequencer": "00"}
    if version_id:
        obj["version-id"] = version_id
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2026-11-22T10:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "r",
            "requester": ACCOUNT,
            "reason": "PutObject",
        },
    }


def sqs_record(body: str, message_id: str | None = None) -> dict[str, Any]:
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "rh",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:data-events",
        "awsRegion": REGION,
    }


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}
