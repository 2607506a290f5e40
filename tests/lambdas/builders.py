"""Events built from AWS's published samples (tests/fixtures/aws_samples), with this project's values."""

from __future__ import annotations

import copy
import io
import json
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "aws_samples"
ACCOUNT = "123456789012"
REGION = "us-east-1"
PREFIX = "mlpipe-test-"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlpipe-trainer:0123456789ab"
IMAGE_DIGEST = "sha256:" + "d" * 64
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@cache
def _sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


def sample(name: str) -> dict[str, Any]:
    """A fresh copy of one published sample."""
    return copy.deepcopy(_sample(name))


def millis_string(moment: datetime) -> str:
    """Times as the published sample gives them: a string of epoch milliseconds."""
    return str(int(moment.timestamp() * 1000))


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
    """The Lambda invoke action's event, from the CodePipeline sample."""
    event = sample("codepipeline-lambda-job.json")
    job = event["CodePipeline.job"]
    job["id"] = job_id or str(uuid.uuid4())
    job["accountId"] = ACCOUNT
    configuration = job["data"]["actionConfiguration"]["configuration"]
    configuration["FunctionName"] = "start-training"
    if parameters is None:
        del configuration["UserParameters"]
    else:
        configuration["UserParameters"] = (
            parameters if isinstance(parameters, str) else json.dumps(parameters)
        )
    if continuation_token:
        job["data"]["continuationToken"] = continuation_token
    else:
        del job["data"]["continuationToken"]
    return event


def job_arn(name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name.lower()}"


def default_tags(name: str) -> dict[str, str]:
    return {
        "commit": COMMIT,
        "repo": "example-org/ml-build-train-pipeline",
        "branch": "main",
        "pipeline-execution": name.removeprefix(PREFIX),
        "trigger": "push",
        "data-version": "abcdef012345",
    }


def state_change_event(
    name: str,
    status: str,
    at_seconds: int,
    secondary: str | None = None,
    failure_reason: str | None = None,
    tags: dict[str, str] | None = None,
    data_bucket: str = "data-bucket",
    data_prefix: str = "datasets/",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A SageMaker Training Job State Change event from the published sample: `at_seconds` after T0 is its
    LastModifiedTime (what orders events). Like the real event it has no metrics or billable time, and a
    FailureReason only when `status` is Failed."""
    event = sample("sagemaker-training-job-state-change.json")
    event["id"] = event_id or str(uuid.uuid4())
    event["account"], event["region"] = ACCOUNT, REGION
    event["time"] = (T0 + timedelta(seconds=at_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["resources"] = [job_arn(name)]
    detail = event["detail"]
    detail.update(
        TrainingJobName=name,
        TrainingJobArn=job_arn(name),
        TrainingJobStatus=status,
        SecondaryStatus=secondary or status,
        HyperParameters={"max_depth": "6", "eta": "0.2"},
        AlgorithmSpecification={"TrainingImage": IMAGE_URI, "TrainingInputMode": "File"},
        CreationTime=millis_string(T0),
        TrainingStartTime=millis_string(T0 + timedelta(seconds=60)),
        LastModifiedTime=millis_string(T0 + timedelta(seconds=at_seconds)),
        Tags=default_tags(name) if tags is None else tags,
    )
    detail["InputDataConfig"][0].update(ChannelName="train")
    detail["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
        S3DataType="S3Prefix",
        S3Uri=f"s3://{data_bucket}/{data_prefix}train/",
        S3DataDistributionType="FullyReplicated",
    )
    detail["ResourceConfig"].update(InstanceType="ml.m5.large", InstanceCount=1, VolumeSizeInGB=30)
    if status in ("Completed", "Failed", "Stopped"):
        detail["TrainingEndTime"] = millis_string(T0 + timedelta(seconds=at_seconds))
    else:
        del detail["TrainingEndTime"]
    if status == "Failed":
        detail["FailureReason"] = failure_reason or "AlgorithmError: failed"
    return event


def tuning_state_change_event(
    name: str,
    status: str,
    at_seconds: int,
    tags: dict[str, str] | None = None,
    data_bucket: str = "data-bucket",
    data_prefix: str = "datasets/",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A SageMaker HyperParameter Tuning Job State Change event from the published sample: like it, no best
    training job, no end time and no failure reason (DescribeHyperParameterTuningJob has them)."""
    event = sample("sagemaker-hyperparameter-tuning-job-state-change.json")
    event["id"] = event_id or str(uuid.uuid4())
    event["account"], event["region"] = ACCOUNT, REGION
    event["time"] = (T0 + timedelta(seconds=at_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:hyper-parameter-tuning-job/{name.lower()}"
    event["resources"] = [arn]
    detail = event["detail"]
    detail.update(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobArn=arn,
        HyperParameterTuningJobStatus=status,
        CreationTime=millis_string(T0),
        LastModifiedTime=millis_string(T0 + timedelta(seconds=at_seconds)),
        Tags={**default_tags(name), "tuning-job": name} if tags is None else tags,
    )
    definition = detail["TrainingJobDefinition"]
    definition.update(StaticHyperParameters={"num_round": "100"})
    definition["AlgorithmSpecification"].update(TrainingImage=IMAGE_URI, TrainingInputMode="File")
    del definition["VpcConfig"]
    definition["InputDataConfig"][0].update(ChannelName="train")
    definition["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
        S3DataType="S3Prefix",
        S3Uri=f"s3://{data_bucket}/{data_prefix}train/",
        S3DataDistributionType="FullyReplicated",
    )
    definition["ResourceConfig"].update(InstanceType="ml.m5.large", InstanceCount=1, VolumeSizeInGB=30)
    return event


def s3_object_created(
    bucket: str, key: str, size: int = 100, version_id: str | None = "v1"
) -> dict[str, Any]:
    """An EventBridge `Object Created` event, from the S3 sample."""
    event = sample("s3-object-created.json")
    event["id"] = str(uuid.uuid4())
    event["account"], event["region"] = ACCOUNT, REGION
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    obj = event["detail"]["object"]
    obj.update(key=key, size=size)
    if version_id:
        obj["version-id"] = version_id
    else:
        del obj["version-id"]
    return event


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


def model_package_arn(group: str, version: int) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{group}/{version}"


def model_package_event(
    group: str,
    version: int,
    status: str,
    changed_at: datetime,
    created_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A SageMaker Model Package State Change event from the published sample: `changed_at` is its
    LastModifiedTime (ISO-8601, whole seconds, as in the sample). The published sample repeats `source`,
    the second time as a list; a real event's `source` is the string."""
    event = sample("sagemaker-model-package-state-change.json")
    event["id"] = event_id or str(uuid.uuid4())
    event["source"] = "aws.sagemaker"
    event["account"], event["region"] = ACCOUNT, REGION
    event["time"] = changed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    arn = model_package_arn(group, version)
    event["resources"] = [arn]
    detail = event["detail"]
    detail.update(
        ModelPackageGroupName=group,
        ModelPackageVersion=version,
        ModelPackageArn=arn,
        ModelApprovalStatus=status,
        CreationTime=(created_at or changed_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
        LastModifiedTime=changed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return event


def output_archive(members: dict[str, bytes]) -> bytes:
    """An output.tar.gz as SageMaker uploads /opt/ml/output/data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def golden_archive(golden: dict[str, Any]) -> bytes:
    """The output.tar.gz of a job whose container wrote this golden set."""
    from pipeline_common.endpoints import GOLDEN_NAME

    return output_archive({GOLDEN_NAME: json.dumps(golden).encode()})


def deployable_package(
    emulated: Any, registry: Any, group: str, table: str, bucket: str, job: str, approve: bool
) -> str:
    """A package of `job` as Register makes one (pending, then approved by default), with the job's Completed
    audit record: what the deploy handlers start from."""
    from pipeline_common import audit

    emulated.client("dynamodb").put_item(
        TableName=table,
        Item={
            "job_name": {"S": job},
            "status": {"S": "Completed"},
            "commit_id": {"S": "abc1234"},
            "created_at": {"S": audit.now_iso()},
            "updated_at": {"S": audit.now_iso()},
        },
    )
    arn = registry.call(
        "CreateModelPackage",
        {
            "ModelPackageGroupName": group,
            "ModelPackageDescription": f"training job {job}",
            "CustomerMetadataProperties": {"training-job": job},
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": "111111111111.dkr.ecr.us-east-1.amazonaws.com/repo@sha256:" + "a" * 64,
                        "ModelDataUrl": f"s3://{bucket}/models/{job}/output/model.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
        },
    )["ModelPackageArn"]
    if approve:
        registry.call("UpdateModelPackage", {"ModelPackageArn": arn, "ModelApprovalStatus": "Approved"})
    return str(arn)
