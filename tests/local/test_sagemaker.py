"""The local SageMaker stand-in behaves like the service for the calls the start-training Lambda makes.

The container is replaced by a small Python process that follows the same /opt/ml contract; the real
image is exercised by tests/e2e.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from mlpipe.local.sagemaker import LocalSageMaker
from tests.lambdas.builders import sample as sample_event

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


def training_request(name: str, buckets: Buckets) -> dict[str, Any]:
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
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{buckets.data}/datasets/train/",
                    }
                },
                "ContentType": "text/csv",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{buckets.models}/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Tags": [{"Key": "commit", "Value": "abc123"}],
    }


@dataclass
class Buckets:
    client: Any  # the harness's S3 client
    data: str
    models: str


@pytest.fixture
def s3(emulated: Any) -> Buckets:
    buckets = Buckets(
        emulated.client("s3"), emulated.data_bucket(versioned=False), emulated.data_bucket(versioned=False)
    )
    buckets.client.put_object(Bucket=buckets.data, Key="datasets/train/part.csv", Body=b"y,x\n1,2\n3,4\n")
    buckets.client.put_object(
        Bucket=buckets.data, Key="datasets/train/", Body=b""
    )  # a folder marker is skipped
    return buckets


def make_sagemaker(
    s3: Buckets,
    tmp_path: Path,
    behaviour: str,
    events: list[dict[str, Any]],
    removed: list[str] | None = None,
) -> LocalSageMaker:
    return LocalSageMaker(
        s3_as_role=lambda role_arn: s3.client,
        workdir=tmp_path,
        start_container=fake_container(behaviour),
        stop_container=(removed if removed is not None else []).append,
        on_state_change=events.append,
        region="us-east-1",
    )


def test_completed_job_has_metrics_model_artifact_and_two_state_changes(s3: Buckets, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    removed: list[str] = []
    sagemaker = make_sagemaker(s3, tmp_path, "ok", events, removed)

    sagemaker.create_training_job(**training_request("job-1", s3))
    description = sagemaker.wait("job-1", poll_seconds=0.05)
    assert len(removed) == 1 and "job-1" in removed[0], "an ended job's container is removed"

    assert description["TrainingJobStatus"] == "Completed"
    metrics = {m["MetricName"]: m["Value"] for m in description["FinalMetricDataList"]}
    assert metrics == {"validation:rmse": 0.25, "train:rmse": 0.75}  # the last value of a metric wins
    artifact = description["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{s3.models}/models/job-1/output/model.tar.gz"
    body = s3.client.get_object(Bucket=s3.models, Key="models/job-1/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("model.txt").read() == b"trained on 3 rows"
    config = tmp_path / "job-1/opt_ml/input/config"
    assert (config / "hyperparameters.json").read_text() == '{"max_depth": "4"}'
    assert [e["detail"]["TrainingJobStatus"] for e in events] == ["InProgress", "Completed"]
    assert events[-1]["detail-type"] == "SageMaker Training Job State Change"
    assert events[-1]["detail"]["Tags"] == {"commit": "abc123"}


def test_state_change_events_are_shaped_like_aws_published_sample(s3: Buckets, tmp_path: Path) -> None:
    """Issue 9 A5: the stand-in must not hand record-status fields the real event lacks."""
    sample = sample_event("sagemaker-training-job-state-change.json")
    for behaviour, job in (("ok", "job-ok"), ("fail", "job-fail")):
        events: list[dict[str, Any]] = []
        sagemaker = make_sagemaker(s3, tmp_path / behaviour, behaviour, events)
        sagemaker.create_training_job(**training_request(job, s3))
        sagemaker.wait(job, poll_seconds=0.05)
        for event in events:
            assert set(event) == set(sample)
            extra = set(event["detail"]) - set(sample["detail"]) - {"ModelArtifacts", "FailureReason"}
            assert extra == set(), f"not in the published event: {extra}"
            for absent in (
                "FinalMetricDataList",
                "BillableTimeInSeconds",
                "TrainingTimeInSeconds",
                "EnableManagedSpotTraining",
            ):
                assert absent not in event["detail"]
            for time_field in ("CreationTime", "LastModifiedTime"):
                assert isinstance(event["detail"][time_field], str) and event["detail"][time_field].isdigit()
            assert isinstance(event["detail"]["Tags"], dict)
            assert ("FailureReason" in event["detail"]) == (event["detail"]["TrainingJobStatus"] == "Failed")


def test_failed_job_reports_the_failure_file(s3: Buckets, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    removed: list[str] = []
    sagemaker = make_sagemaker(s3, tmp_path, "fail", events, removed)

    sagemaker.create_training_job(**training_request("job-2", s3))
    description = sagemaker.wait("job-2", poll_seconds=0.05)
    assert len(removed) == 1 and "job-2" in removed[0], "a failed job's container is removed"

    assert description["TrainingJobStatus"] == "Failed"
    assert (
        description["FailureReason"]
        == "AlgorithmError: Hyperparameter max_depth must be from 1 to 20, got '-1'."
    )
    assert description["ModelArtifacts"]["S3ModelArtifacts"] == ""
    assert [e["detail"]["TrainingJobStatus"] for e in events] == ["InProgress", "Failed"]


def test_duplicate_name_raises_resource_in_use_like_real_sagemaker(s3: Buckets, tmp_path: Path) -> None:
    sagemaker = make_sagemaker(s3, tmp_path, "ok", [])
    sagemaker.create_training_job(**training_request("job-3", s3))

    with pytest.raises(ClientError) as raised:
        sagemaker.create_training_job(**training_request("job-3", s3))

    assert raised.value.response["Error"]["Code"] == "ResourceInUse"
    sagemaker.wait("job-3", poll_seconds=0.05)


def test_requests_are_checked_against_the_service_model(s3: Buckets, tmp_path: Path) -> None:
    sagemaker = make_sagemaker(s3, tmp_path, "ok", [])
    request = training_request("job-4", s3)
    request["ResourceConfig"]["InstanceCount"] = "one"

    with pytest.raises(ParamValidationError):
        sagemaker.create_training_job(**request)


def test_unknown_job_is_a_validation_error(s3: Buckets, tmp_path: Path) -> None:
    with pytest.raises(ClientError) as raised:
        make_sagemaker(s3, tmp_path, "ok", []).describe_training_job(TrainingJobName="missing")
    assert raised.value.response["Error"]["Code"] == "ValidationException"
