"""The local SageMaker stand-in behaves like the service for the calls the start-training Lambda makes.

The container is replaced by a small Python process that follows the same /opt/ml contract; the real
image is exercised by tests/e2e.
"""

from __future__ import annotations

import io
import itertools
import json
import re
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


def test_an_ended_job_is_still_described_in_a_later_session_against_the_same_emulator(
    s3: Buckets, tmp_path: Path
) -> None:
    """A later local run against a reused emulator is a later session of the same account: SageMaker keeps
    describing an ended job (a cache hit's Evaluate describes the reused run's job), its name stays taken,
    and its tags stay readable."""
    from mlpipe.local.store import S3JsonStore

    store = S3JsonStore(s3.client, s3.models, "stand-ins/training-jobs.json")
    first = LocalSageMaker(
        s3_as_role=lambda role_arn: s3.client,
        workdir=tmp_path / "first",
        start_container=fake_container("ok"),
        stop_container=lambda name: None,
        on_state_change=lambda event: None,
        region="us-east-1",
        store=store,
    )
    first.create_training_job(**training_request("job-kept", s3))
    ended = first.wait("job-kept", poll_seconds=0.05)

    later = LocalSageMaker(
        s3_as_role=lambda role_arn: s3.client,
        workdir=tmp_path / "later",
        start_container=fake_container("ok"),
        stop_container=lambda name: None,
        on_state_change=lambda event: None,
        region="us-east-1",
        store=store,
    )
    described = later.describe_training_job(TrainingJobName="job-kept")
    assert described["TrainingJobStatus"] == "Completed"
    assert described["FinalMetricDataList"][0]["MetricName"] == ended["FinalMetricDataList"][0]["MetricName"]
    assert described["ModelArtifacts"] == ended["ModelArtifacts"]
    assert described["TrainingEndTime"] == ended["TrainingEndTime"].timestamp()  # the JSON protocol's form
    with pytest.raises(ClientError) as raised:
        later.create_training_job(**training_request("job-kept", s3))
    assert raised.value.response["Error"]["Code"] == "ResourceInUse"
    assert later.list_tags(ResourceArn=described["TrainingJobArn"]) == {
        "Tags": [{"Key": "commit", "Value": "abc123"}]
    }


# -- hyperparameter tuning jobs ---------------------------------------------------------------------------------
FAKE_TUNED_TRAIN = """
import json, pathlib, sys
opt_ml = pathlib.Path(sys.argv[1])
hp = json.loads((opt_ml / "input/config/hyperparameters.json").read_text())
if sys.argv[2] == "fail":
    (opt_ml / "output/failure").write_text("boom")
    sys.exit(1)
(opt_ml / "model/model.txt").write_text(json.dumps(hp))
# An objective that depends on the tuned values: lowest for max_depth 5.
print(f"METRIC validation:rmse={abs(int(hp['max_depth']) - 5) + float(hp['eta'])}")
"""


def fake_tuned_container(behaviour: str) -> Any:
    def start(image: str, opt_ml: Path, name: str, log_file: Path) -> subprocess.Popen:
        log = log_file.open("w")
        return subprocess.Popen(
            [sys.executable, "-c", FAKE_TUNED_TRAIN, str(opt_ml), behaviour], stdout=log, stderr=log
        )

    return start


def tuning_request(
    name: str, buckets: Buckets, max_jobs: int = 4, strategy: str = "Bayesian"
) -> dict[str, Any]:
    training = training_request("unused", buckets)
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "9"}],
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.01", "MaxValue": "0.3", "ScalingType": "Logarithmic"}
                ],
            },
            "TrainingJobEarlyStoppingType": "Off",
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"num_round": "10"},
            "AlgorithmSpecification": training["AlgorithmSpecification"],
            "RoleArn": training["RoleArn"],
            "InputDataConfig": training["InputDataConfig"],
            "OutputDataConfig": training["OutputDataConfig"],
            "ResourceConfig": training["ResourceConfig"],
            "StoppingCondition": training["StoppingCondition"],
        },
        "Tags": [{"Key": "commit", "Value": "abc123"}, {"Key": "tuning-job", "Value": name}],
    }


def tuning_sagemaker(
    s3: Buckets, tmp_path: Path, behaviour: str, events: list[dict[str, Any]], notes: list[str]
) -> LocalSageMaker:
    return LocalSageMaker(
        s3_as_role=lambda role_arn: s3.client,
        workdir=tmp_path,
        start_container=fake_tuned_container(behaviour),
        stop_container=lambda name: None,
        on_state_change=events.append,
        region="us-east-1",
        note=notes.append,
    )


def test_a_tuning_job_runs_its_trials_one_after_another_and_names_the_best(
    s3: Buckets, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    notes: list[str] = []
    sagemaker = tuning_sagemaker(s3, tmp_path, "ok", events, notes)
    arn = sagemaker.create_hyper_parameter_tuning_job(**tuning_request("tune-1", s3))[
        "HyperParameterTuningJobArn"
    ]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/tune-1"
    description = sagemaker.tuning.wait("tune-1")

    assert description["HyperParameterTuningJobStatus"] == "Completed"
    assert description["TrainingJobStatusCounters"]["Completed"] == 4
    assert description["ObjectiveStatusCounters"] == {"Succeeded": 4, "Pending": 0, "Failed": 0}
    trials = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-1"
    )["TrainingJobSummaries"]
    assert [t["TrainingJobName"][: len("tune-1-001")] for t in trials] == [
        f"tune-1-00{i}" for i in range(1, 5)
    ]
    assert all(re.fullmatch(r"tune-1-\d{3}-[0-9a-f]{8}", t["TrainingJobName"]) for t in trials)
    objectives = {
        t["TrainingJobName"]: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials
    }
    best = description["BestTrainingJob"]
    assert best["TrainingJobName"] == min(objectives, key=objectives.__getitem__)
    assert best["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "MetricName": "validation:rmse",
        "Value": min(objectives.values()),
    }
    # Each trial: the static and the sampled hyperparameters, the objective for the container, the tuning
    # job's tags, its TuningJobArn; sampled values within their ranges.
    for trial in trials:
        job = sagemaker.describe_training_job(TrainingJobName=trial["TrainingJobName"])
        hp = job["HyperParameters"]
        assert hp["num_round"] == "10" and hp["_tuning_objective_metric"] == "validation:rmse"
        assert 2 <= int(hp["max_depth"]) <= 9 and 0.01 <= float(hp["eta"]) <= 0.3
        assert trial["TunedHyperParameters"] == {"max_depth": hp["max_depth"], "eta": hp["eta"]}
        assert job["TuningJobArn"] == arn
        assert sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"][1] == {
            "Key": "tuning-job",
            "Value": "tune-1",
        }
        assert job["ModelArtifacts"]["S3ModelArtifacts"].endswith(
            f"/{trial['TrainingJobName']}/output/model.tar.gz"
        )
    # One trial at a time: each started after the previous one ended.
    ordered = sorted(trials, key=lambda t: t["TrainingJobName"])
    for before, after in itertools.pairwise(ordered):
        assert after["TrainingStartTime"] >= before["TrainingEndTime"]
    # The local strategy is said once, and honestly.
    assert any("drawn at random" in note and "Bayesian" in note for note in notes)

    tuning_events = [
        e for e in events if e["detail-type"] == "SageMaker HyperParameter Tuning Job State Change"
    ]
    assert [e["detail"]["HyperParameterTuningJobStatus"] for e in tuning_events] == [
        "InProgress",
        "Completed",
    ]
    trial_events = [e for e in events if e["detail-type"] == "SageMaker Training Job State Change"]
    assert len(trial_events) == 8 and all(e["detail"]["Tags"]["tuning-job"] == "tune-1" for e in trial_events)


def test_tuning_events_are_shaped_like_aws_published_sample(s3: Buckets, tmp_path: Path) -> None:
    sample = sample_event("sagemaker-hyperparameter-tuning-job-state-change.json")
    events: list[dict[str, Any]] = []
    sagemaker = tuning_sagemaker(s3, tmp_path, "ok", events, [])
    sagemaker.create_hyper_parameter_tuning_job(**tuning_request("tune-2", s3, max_jobs=1))
    sagemaker.tuning.wait("tune-2")
    tuning_events = [e for e in events if e["detail-type"] == sample["detail-type"]]
    assert tuning_events
    for event in tuning_events:
        assert set(event) == set(sample)
        assert set(event["detail"]) == set(sample["detail"])  # no BestTrainingJob, no FailureReason
        for time_field in ("CreationTime", "LastModifiedTime"):
            assert event["detail"][time_field].isdigit()
        assert event["detail"]["Tags"] == {"commit": "abc123", "tuning-job": "tune-2"}


def test_a_tuning_job_whose_trials_all_fail_fails(s3: Buckets, tmp_path: Path) -> None:
    sagemaker = tuning_sagemaker(s3, tmp_path, "fail", [], [])
    sagemaker.create_hyper_parameter_tuning_job(**tuning_request("tune-3", s3, max_jobs=2))
    description = sagemaker.tuning.wait("tune-3")
    assert description["HyperParameterTuningJobStatus"] == "Failed"
    assert "No training job reported the objective metric validation:rmse" in description["FailureReason"]
    assert "BestTrainingJob" not in description
    assert description["TrainingJobStatusCounters"]["NonRetryableError"] == 2


def test_stopping_a_tuning_job_stops_its_running_trial(s3: Buckets, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    sagemaker = tuning_sagemaker(s3, tmp_path, "ok", events, [])
    sagemaker.create_hyper_parameter_tuning_job(**tuning_request("tune-4", s3))
    sagemaker.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-4")
    description = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-4")
    assert description["HyperParameterTuningJobStatus"] == "Stopped"
    (trial,) = sagemaker.tuning.job("tune-4").trials
    assert sagemaker.job(trial).status == "Stopped"
    statuses = [
        e["detail"]["HyperParameterTuningJobStatus"]
        for e in events
        if e["detail-type"] == "SageMaker HyperParameter Tuning Job State Change"
    ]
    assert statuses == ["InProgress", "Stopping", "Stopped"]


def test_tuning_requests_are_checked_like_the_service(s3: Buckets, tmp_path: Path) -> None:
    sagemaker = tuning_sagemaker(s3, tmp_path, "ok", [], [])
    request = tuning_request("tune-5", s3)
    request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = "four"
    with pytest.raises(ParamValidationError):
        sagemaker.create_hyper_parameter_tuning_job(**request)
    # botocore checks no maximum length; the service does (a tuning job name has at most 32 characters).
    with pytest.raises(ClientError) as too_long:
        sagemaker.create_hyper_parameter_tuning_job(**tuning_request("t" * 33, s3))
    assert too_long.value.response["Error"]["Code"] == "ValidationException"
    assert "less than or equal to 32" in str(too_long.value)
    sagemaker.create_hyper_parameter_tuning_job(**tuning_request("tune-5", s3, max_jobs=1))
    with pytest.raises(ClientError) as raised:
        sagemaker.create_hyper_parameter_tuning_job(**tuning_request("tune-5", s3, max_jobs=1))
    assert raised.value.response["Error"]["Code"] == "ResourceInUse"
    with pytest.raises(ClientError) as missing:
        sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="nope")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFound"
    sagemaker.tuning.wait("tune-5")


# -- several hosts ---------------------------------------------------------------------------------------------
FAKE_HOST = """
import json, pathlib, sys
opt_ml = pathlib.Path(sys.argv[1])
resources = json.loads((opt_ml / "input/config/resourceconfig.json").read_text())
files = sorted(p.name for p in (opt_ml / "input/data/train").iterdir())
print(json.dumps({"host": resources["current_host"], "hosts": resources["hosts"], "files": files,
                  "hostname": sys.argv[3], "network": sys.argv[4]}))
if sys.argv[2] == "fail" and resources["current_host"] == "algo-2":
    (opt_ml / "output/failure").write_text("The target column 'y' has 1 missing value(s).")
    sys.exit(1)
if resources["current_host"] == "algo-1":
    (opt_ml / "model/model.txt").write_text("one model")
    print("METRIC validation:rmse=0.5")
"""


def fake_hosts(behaviour: str, started: list[dict[str, Any]]) -> Any:
    def start(
        image: str, opt_ml: Path, name: str, log_file: Path, network: str = "", hostname: str = "",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:  # fmt: skip
        started.append({"name": name, "network": network, "hostname": hostname, "env": env})
        log = log_file.open("w")
        return subprocess.Popen(
            [sys.executable, "-c", FAKE_HOST, str(opt_ml), behaviour, hostname, network],
            stdout=log,
            stderr=log,
        )

    return start


@pytest.mark.parametrize("behaviour", ["ok", "fail"])
def test_instance_count_runs_one_container_per_host_on_a_private_network(
    s3: Buckets, tmp_path: Path, behaviour: str
) -> None:
    for k in range(2, 5):
        s3.client.put_object(Bucket=s3.data, Key=f"datasets/train/part-{k}.csv", Body=b"y,x\n1,2\n")
    started: list[dict[str, Any]] = []
    networks: list[tuple[str, str]] = []
    removed: list[str] = []
    sagemaker = LocalSageMaker(
        s3_as_role=lambda role_arn: s3.client,
        workdir=tmp_path,
        start_container=fake_hosts(behaviour, started),
        stop_container=removed.append,
        on_state_change=[].append,
        region="us-east-1",
        create_network=lambda name: networks.append(("create", name)),
        remove_network=lambda name: networks.append(("remove", name)),
    )
    request = training_request("multi", s3)
    request["ResourceConfig"]["InstanceCount"] = 3
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"] = "ShardedByS3Key"
    sagemaker.create_training_job(**request)
    description = sagemaker.wait("multi", poll_seconds=0.05)

    job = sagemaker.job("multi")
    logs = [job.log_file, *(host.log_file for host in job.extra_hosts)]
    seen = [json.loads(path.read_text().splitlines()[0]) for path in logs]
    assert [s["host"] for s in seen] == ["algo-1", "algo-2", "algo-3"]
    assert all(s["hosts"] == ["algo-1", "algo-2", "algo-3"] and s["hostname"] == s["host"] for s in seen)
    # ShardedByS3Key: sorted keys, round-robin, every file on exactly one host
    assert [s["files"] for s in seen] == [["part-2.csv", "part.csv"], ["part-3.csv"], ["part-4.csv"]]
    network = started[0]["network"]
    assert network and all(s["network"] == network for s in started)
    assert all(s["env"] == {"OMP_WAIT_POLICY": "PASSIVE"} for s in started)  # the hosts share the cores
    assert networks == [("create", network), ("remove", network)] and len(removed) == 3
    if behaviour == "ok":
        assert description["TrainingJobStatus"] == "Completed"
        assert description["ResourceConfig"]["InstanceCount"] == 3
    else:
        assert description["TrainingJobStatus"] == "Failed"
        assert description["FailureReason"] == "AlgorithmError: The target column 'y' has 1 missing value(s)."


def test_several_hosts_without_a_container_network_fail_the_job(s3: Buckets, tmp_path: Path) -> None:
    sagemaker = make_sagemaker(s3, tmp_path, "ok", [])
    request = training_request("multi", s3)
    request["ResourceConfig"]["InstanceCount"] = 2
    sagemaker.create_training_job(**request)
    description = sagemaker.describe_training_job(TrainingJobName="multi")
    assert description["TrainingJobStatus"] == "Failed"
    assert "InstanceCount 2 needs a container network" in description["FailureReason"]
