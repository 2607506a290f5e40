"""The local SageMaker stand-in behaves like the service for the calls the start-training Lambda makes.

The container is replaced by a small Python process that follows the same /opt/ml contract; the real
image is exercised by tests/e2e.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from moto import mock_aws

from mlpipe.local.sagemaker import LocalSageMaker

FAKE_TRAIN = """
import pathlib, sys
opt_ml = pathlib.Path(sys.argv[1])
rows = (opt_ml / "input/data/train/part.csv").read_text().splitlines()
if sys.argv[2] == "fail":
    (opt_ml / "output/failure").write_text("Hyperparameter max_depth must be from 1 to 20, got '-1'.")
    sys.exit(2)
(opt_ml / "model/model.txt").write_text(f"trained on {len(rows)} rows")
print("METRIC train:rmse=0.75")
print("METRIC validation:rmse=0.5")
print("METRIC validation:rmse=2.5e-1")
"""


def fake_container(behaviour: str) -> Any:
    def start(image: str, opt_ml: Path, name: str, log_file: Path) -> subprocess.Popen:
        log = log_file.open("w")
        return subprocess.Popen(
            [sys.executable, "-c", FAKE_TRAIN, str(opt_ml), behaviour], stdout=log, stderr=log
        )

    return start


def training_request(name: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "trainer:abc",
            "TrainingInputMode": "File",
            "MetricDefinitions": [
                {
                    "Name": "validation:rmse",
                    "Regex": r"METRIC validation:rmse=(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)",
                },
                {"Name": "train:rmse", "Regex": r"METRIC train:rmse=(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)"},
            ],
        },
        "RoleArn": "arn:aws:iam::123456789012:role/training",
        "HyperParameters": {"max_depth": "4"},
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://data/datasets/train/"}
                },
                "ContentType": "text/csv",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://models/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Tags": [{"Key": "commit", "Value": "abc123"}],
    }


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("data", "models"):
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket="data", Key="datasets/train/part.csv", Body=b"y,x\n1,2\n3,4\n")
        client.put_object(Bucket="data", Key="datasets/train/", Body=b"")  # a folder marker is skipped
        yield client


def make_sagemaker(
    s3: Any, tmp_path: Path, behaviour: str, events: list[dict[str, Any]], removed: list[str] | None = None
) -> LocalSageMaker:
    return LocalSageMaker(
        s3_client=s3,
        workdir=tmp_path,
        start_container=fake_container(behaviour),
        stop_container=(removed if removed is not None else []).append,
        on_state_change=events.append,
        region="us-east-1",
    )


def test_completed_job_has_metrics_model_artifact_and_two_state_changes(s3: Any, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    removed: list[str] = []
    sagemaker = make_sagemaker(s3, tmp_path, "ok", events, removed)

    sagemaker.create_training_job(**training_request("job-1"))
    description = sagemaker.wait("job-1", poll_seconds=0.05)
    assert len(removed) == 1 and "job-1" in removed[0], "an ended job's container is removed"

    assert description["TrainingJobStatus"] == "Completed"
    metrics = {m["MetricName"]: m["Value"] for m in description["FinalMetricDataList"]}
    assert metrics == {"validation:rmse": 0.25, "train:rmse": 0.75}  # the last value of a metric wins
    artifact = description["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == "s3://models/models/job-1/output/model.tar.gz"
    body = s3.get_object(Bucket="models", Key="models/job-1/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("model.txt").read() == b"trained on 3 rows"
    config = tmp_path / "job-1/opt_ml/input/config"
    assert (config / "hyperparameters.json").read_text() == '{"max_depth": "4"}'
    assert [e["detail"]["TrainingJobStatus"] for e in events] == ["InProgress", "Completed"]
    assert events[-1]["detail-type"] == "SageMaker Training Job State Change"
    assert isinstance(events[-1]["detail"]["TrainingEndTime"], int)  # epoch millis, as EventBridge sends
    assert events[-1]["detail"]["Tags"] == {"commit": "abc123"}


def test_failed_job_reports_the_failure_file(s3: Any, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    removed: list[str] = []
    sagemaker = make_sagemaker(s3, tmp_path, "fail", events, removed)

    sagemaker.create_training_job(**training_request("job-2"))
    description = sagemaker.wait("job-2", poll_seconds=0.05)
    assert len(removed) == 1 and "job-2" in removed[0], "a failed job's container is removed"

    assert description["TrainingJobStatus"] == "Failed"
    assert (
        description["FailureReason"]
        == "AlgorithmError: Hyperparameter max_depth must be from 1 to 20, got '-1'."
    )
    assert description["ModelArtifacts"]["S3ModelArtifacts"] == ""
    assert [e["detail"]["TrainingJobStatus"] for e in events] == ["InProgress", "Failed"]


def test_duplicate_name_raises_resource_in_use_like_real_sagemaker(s3: Any, tmp_path: Path) -> None:
    sagemaker = make_sagemaker(s3, tmp_path, "ok", [])
    sagemaker.create_training_job(**training_request("job-3"))

    with pytest.raises(ClientError) as raised:
        sagemaker.create_training_job(**training_request("job-3"))

    assert raised.value.response["Error"]["Code"] == "ResourceInUse"
    sagemaker.wait("job-3", poll_seconds=0.05)


def test_requests_are_checked_against_the_service_model(s3: Any, tmp_path: Path) -> None:
    sagemaker = make_sagemaker(s3, tmp_path, "ok", [])
    request = training_request("job-4")
    request["ResourceConfig"]["InstanceCount"] = "one"

    with pytest.raises(ParamValidationError):
        sagemaker.create_training_job(**request)


def test_unknown_job_is_a_validation_error(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(ClientError) as raised:
        make_sagemaker(s3, tmp_path, "ok", []).describe_training_job(TrainingJobName="missing")
    assert raised.value.response["Error"]["Code"] == "ValidationException"
