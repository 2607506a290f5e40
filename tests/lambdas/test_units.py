"""The shared module on its own: metric regexes, email formatting, data version, settings, job request."""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters
from pipeline_common import data_version, metrics, notify, training_job
from pipeline_common.data_version import DataObject, DataVersion
from pipeline_common.errors import ConfigurationError
from pipeline_common.settings import RecordStatusSettings, StartTrainingSettings, TrainingConfig

from stacks.functions import START_TRAINING
from tests.lambda_fixtures import Lambdas

# start-training's environment for the tests that only read settings (no AWS call).
START_ENV = {
    "PROJECT_NAME": "mlpipe",
    "ENV_NAME": "test",
    "PIPELINE_NAME": "TrainingPipeline-test",
    "AUDIT_TABLE_NAME": "audit",
    "DATA_BUCKET": "data-bucket",
    "DATA_PREFIX": "datasets/",
    "MODEL_BUCKET": "models-bucket",
    "MODEL_PREFIX": "models/",
    "CHECKPOINT_PREFIX": "checkpoints/",
    "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
    "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/mlpipe-sagemaker",
    "JOB_NAME_PREFIX": "mlpipe-test-",
    "TRAINING_CONFIG": json.dumps({"instance_type": "ml.m5.large", "metric_names": ["rmse", "r2"]}),
}


@pytest.fixture
def start_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in START_ENV.items():
        monkeypatch.setenv(name, value)
    return START_ENV


# -- metrics ------------------------------------------------------------------------------------------------


MODEL_METRICS = ("rmse", "mae", "r2", "logloss", "accuracy", "auc")


def test_metric_definitions_cover_every_channel_and_name_within_sagemaker_limits() -> None:
    definitions = metrics.metric_definitions(MODEL_METRICS)
    assert len(definitions) == 18
    assert {d["Name"] for d in definitions} == {
        f"{c}:{n}" for c in ("train", "validation", "test") for n in MODEL_METRICS
    }
    assert all(len(d["Name"]) <= 255 and len(d["Regex"]) <= 500 for d in definitions)
    assert all(re.compile(d["Regex"]).groups == 1 for d in definitions)
    with pytest.raises(ValueError, match="SageMaker takes 1 to 40"):
        metrics.metric_definitions([f"m{i}" for i in range(14)])
    with pytest.raises(ValueError, match="SageMaker takes 1 to 40"):
        metrics.metric_definitions([])


def test_metric_channels_are_the_containers() -> None:
    from sagemaker_contract.training import FINAL_CHANNEL_ORDER, METRIC_CHANNELS

    assert metrics.CHANNELS == METRIC_CHANNELS
    assert metrics.HEADLINE_CHANNEL_ORDER == FINAL_CHANNEL_ORDER


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ({"train:rmse": 0.1, "validation:rmse": 0.3, "test:rmse": 0.4, "test:mae": 0.2}, ("test:mae", 0.2)),
        ({"train:rmse": 0.1, "validation:r2": 0.8}, ("validation:r2", 0.8)),
        ({"train:rmse": 0.1}, ("train:rmse", 0.1)),
        ({}, None),
        (None, None),
    ],
)
def test_the_headline_metric_prefers_test_then_validation_then_train(recorded, expected) -> None:
    assert metrics.headline(recorded) == expected


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("METRIC validation:rmse=0.4213", "validation:rmse", 0.4213),
        ("METRIC train:logloss=1e-05", "train:logloss", 1e-05),
        ("METRIC train:r2=-0.25", "train:r2", -0.25),
        ("METRIC validation:auc=9.5E+1", "validation:auc", 95.0),
        ("2026-11-22 10:00:00 INFO METRIC validation:accuracy=.875", "validation:accuracy", 0.875),
    ],
)
def test_metric_regexes_read_the_container_lines(line: str, name: str, value: float) -> None:
    found = metrics.scrape(line, MODEL_METRICS)
    assert found == {name: pytest.approx(value)}


def test_metric_regexes_do_not_cross_names_or_channels() -> None:
    log = "METRIC train:rmse=1.0\nMETRIC validation:rmse=2.0\nMETRIC train:rmse=0.5\nMETRIC validation:accuracy=0.9\n"
    assert metrics.scrape(log, MODEL_METRICS) == {
        "train:rmse": 0.5,
        "validation:rmse": 2.0,
        "validation:accuracy": 0.9,
    }


# -- notify -------------------------------------------------------------------------------------------------
RECORD: dict[str, Any] = {
    "job_name": "mlpipe-dev-3f2c",
    "status": "Completed",
    "secondary_status": "Completed",
    "commit_id": "abc1234def5678abc1234def5678abc1234def56",
    "branch": "main",
    "repo": "example-org/repo",
    "trigger": "push",
    "data_version": "0a1b2c3d4e5f",
    "data_bucket": "data",
    "data_prefix": "datasets/",
    "image_uri": "repo:tag",
    "instance_type": "ml.m5.large",
    "instance_count": 2,
    "created_at": "2026-11-22T10:00:00.000+00:00",
    "started_at": "2026-11-22T10:01:00.000+00:00",
    "ended_at": "2026-11-22T11:03:05.000+00:00",
    "billable_seconds": 3725,
    "metrics": {"validation:rmse": 0.4213},
    "model_artifact": "s3://models/m/model.tar.gz",
    "pipeline_execution_id": "exec-1",
}


def test_subject_format() -> None:
    assert notify.subject("mlpipe", "dev", RECORD) == (
        "[mlpipe/dev] Training Completed: mlpipe-dev-3f2c (abc1234, data v0a1b2c3d)"
    )


def test_subject_always_fits_sns_and_keeps_commit_and_data_version() -> None:
    job = "mlpipe-dev-12345678-1234-1234-1234-123456789012"  # prefix + execution id, as deployed
    subject = notify.subject("mlpipe", "dev", {**RECORD, "job_name": job, "status": "InProgress"})
    assert len(subject) < 100 and subject.isascii()
    assert subject.startswith("[mlpipe/dev] Training InProgress: mlpipe-dev-12345678-")
    assert "..." in subject and subject.endswith("9012 (abc1234, data v0a1b2c3d)")
    long = notify.subject("a" * 40, "b" * 20, {**RECORD, "job_name": "j" * 63})
    assert len(long) < 100 and long.isascii() and "..." in long
    unknown = notify.subject("p", "e", {"job_name": "j", "status": "Failed"})
    assert unknown == "[p/e] Training Failed: j (unknown, data vunknown)"


def test_body_is_a_readable_summary() -> None:
    body = notify.body("eu-west-1", "TrainingPipeline-dev", {**RECORD, "failure_reason": None})
    assert "Training job mlpipe-dev-3f2c is Completed." in body
    assert "Duration:      1h02m05s" in body
    assert "2 x ml.m5.large" in body
    assert "validation:rmse  0.4213" in body
    # 3725 s x 2 instances = 2.069 instance-hours x $0.115
    assert "~$0.2380 (2.069 instance-hours of ml.m5.large" in body
    assert (
        "https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1#/jobs/mlpipe-dev-3f2c"
        in body
    )
    assert "log-group/$252Faws$252Fsagemaker$252FTrainingJobs" in body
    assert "pipelines/TrainingPipeline-dev/executions/exec-1/timeline?region=eu-west-1" in body
    assert "Reason:" not in body


def test_cost_is_unknown_for_unknown_types_and_notes_spot() -> None:
    assert notify.estimated_cost({**RECORD, "instance_type": "ml.x99.huge"}).startswith("unknown")
    assert notify.estimated_cost({k: v for k, v in RECORD.items() if k != "billable_seconds"}).startswith(
        "unknown"
    )
    spot = notify.estimated_cost({**RECORD, "use_spot": True, "training_seconds": 7450})
    assert "managed spot" in spot and "50% saved" in spot


def test_a_running_job_has_no_duration_yet() -> None:
    body = notify.body("us-east-1", "p", {**RECORD, "status": "InProgress", "ended_at": None})
    assert "Duration:      unknown (still running)" in body


# -- data version -------------------------------------------------------------------------------------------
def test_the_manifest_hash_is_deterministic_and_content_sensitive() -> None:
    a = DataObject("d/train/a.csv", "v1", "e1", 10)
    b = DataObject("d/train/b.csv", "v2", "e2", 10)
    assert data_version.manifest_hash([a, b]) == data_version.manifest_hash([b, a])
    assert re.fullmatch(r"[0-9a-f]{12}", data_version.manifest_hash([a, b]))
    assert data_version.manifest_hash([a, b]) != data_version.manifest_hash(
        [a, DataObject(b.key, "v3", "e2", 10)]
    )
    assert data_version.manifest_hash([a, b]) != data_version.manifest_hash([a])


def test_current_objects_skip_old_versions_delete_markers_and_folder_markers() -> None:
    pages = [
        {
            "Versions": [
                {"Key": "d/train/", "VersionId": "f", "IsLatest": True, "Size": 0, "ETag": '"x"'},
                {"Key": "d/train/a.csv", "VersionId": "new", "IsLatest": True, "Size": 5, "ETag": '"ea"'},
                {"Key": "d/train/a.csv", "VersionId": "old", "IsLatest": False, "Size": 5, "ETag": '"eo"'},
                {"Key": "d/train/gone.csv", "VersionId": "g", "IsLatest": False, "Size": 5, "ETag": '"eg"'},
            ],
            "DeleteMarkers": [{"Key": "d/train/gone.csv", "VersionId": "dm", "IsLatest": True}],
        }
    ]
    assert data_version.current_objects(pages) == [DataObject("d/train/a.csv", "new", "ea", 5)]


@pytest.mark.parametrize("versioned", [True, False])
def test_resolve_against_versioned_and_unversioned_buckets(versioned: bool, lambdas: Lambdas) -> None:
    emulated = lambdas.emulated
    bucket = emulated.data_bucket(versioned=versioned)
    emulated.put_objects(
        bucket, {"d/train/a.csv": b"1", "d/train/": b"", "d/validation/v.csv": b"2", "x/o.csv": b"3"}
    )
    with lambdas.as_function(START_TRAINING):
        first = data_version.resolve(bucket, "d/")
        assert sorted(first.version_ids) == ["d/train/a.csv", "d/validation/v.csv"]
        assert all((v != "null") == versioned for v in first.version_ids.values())
        assert data_version.resolve(bucket, "d/").manifest_hash == first.manifest_hash
    emulated.put_objects(bucket, {"d/train/a.csv": b"changed"})
    with lambdas.as_function(START_TRAINING):
        assert data_version.resolve(bucket, "d/").manifest_hash != first.manifest_hash


@pytest.mark.parametrize("versioned", [True, False])
def test_without_list_bucket_versions_the_same_versions_come_from_head_object(
    versioned: bool, lambdas: Lambdas
) -> None:
    emulated = lambdas.emulated
    bucket = emulated.data_bucket(versioned=versioned)
    emulated.put_objects(bucket, {"d/train/a.csv": b"1", "d/train/": b"", "d/validation/v.csv": b"2"})
    with lambdas.as_function(START_TRAINING):
        expected = data_version.resolve(bucket, "d/")
    # A role without s3:ListBucketVersions (moto denies it, as AWS would): ListObjectsV2 + HeadObject instead.
    with lambdas.cloud.as_role(
        ("s3:ListBucket", "s3:GetObject", "s3:GetObjectVersion"), lambdas.env(START_TRAINING)
    ):
        fallback = data_version.resolve(bucket, "d/")
    assert fallback.version_ids == expected.version_ids
    assert fallback.manifest_hash == expected.manifest_hash


# -- settings -----------------------------------------------------------------------------------------------
def test_every_missing_variable_is_named(start_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUDIT_TABLE_NAME", "DATA_BUCKET", "KMS_KEY_ARN", "JOB_NAME_PREFIX", "TRAINING_CONFIG"):
        with monkeypatch.context() as patch:
            patch.delenv(name)
            with pytest.raises(ConfigurationError, match=name):
                StartTrainingSettings.from_env()


def test_record_status_settings_name_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROJECT_NAME", "TOPIC_ARN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="PROJECT_NAME"):
        RecordStatusSettings.from_env()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"instance_type": "m5.large"}', "instance_type"),
        ('{"instance_type": "ml.m5.large", "instance_count": 0}', "instance_count"),
        ('{"instance_type": "ml.m5.large", "use_spot": "maybe"}', "use_spot"),
        ('{"instance_type": "ml.m5.large", "colour": "red"}', "unknown keys colour"),
        (
            '{"instance_type": "ml.m5.large", "use_spot": true, "max_runtime_seconds": 100, "max_wait_seconds": 50}',
            "max_wait_seconds",
        ),
        ('{"instance_type": "ml.m5.large", "hyperparameters": {"a": [1]}}', "hyperparameters"),
        ('{"instance_type": "ml.m5.large"}', "metric_names must be the model's metric names"),
        ('{"instance_type": "ml.m5.large", "metric_names": []}', "metric_names"),
        ('{"instance_type": "ml.m5.large", "metric_names": "rmse"}', "metric_names"),
        (
            '{"instance_type": "ml.m5.large", "metric_names": ["rmse"], "data_distribution": "Sharded"}',
            "FullyReplicated or ShardedByS3Key",
        ),
    ],
)
def test_training_config_is_validated(config: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TrainingConfig.from_json(config)


def test_training_config_defaults_and_conversions() -> None:
    config = TrainingConfig.from_json(
        json.dumps(
            {
                "instance_type": "ml.m5.large",
                "metric_names": list(MODEL_METRICS),
                "use_spot": "true",
                "max_runtime_seconds": 600,
                "hyperparameters": {"n": 5, "b": True},
            }
        )
    )
    assert config.use_spot and config.max_wait_seconds == 1200
    assert config.hyperparameters == {"n": "5", "b": "true"}


# -- the training job request -------------------------------------------------------------------------------
def test_job_names_are_deterministic_valid_and_bounded() -> None:
    assert training_job.job_name("mlpipe-dev-", "3f2c-uuid") == "mlpipe-dev-3f2c-uuid"
    long = training_job.job_name("a-long-prefix-for-names-", "x" * 60)
    assert len(long) <= 63 and long == training_job.job_name("a-long-prefix-for-names-", "x" * 60)
    assert long != training_job.job_name("a-long-prefix-for-names-", "x" * 59 + "y")
    odd = training_job.job_name("p-", "exec_id/with:odd chars-")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", odd)


def _request(monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]) -> dict[str, Any]:
    monkeypatch.setenv("TRAINING_CONFIG", json.dumps({"metric_names": list(MODEL_METRICS), **config}))
    settings = StartTrainingSettings.from_env()
    params = training_job.JobParameters(
        "img:1", "sha256:1", "c" * 40, "feature/x#1", "o/r", "exec-1", "manual"
    )
    data = DataVersion("bucket", "datasets/", (DataObject("datasets/train/a.csv", "v1", "e", 3),))
    return training_job.create_request(settings, params, data, "mlpipe-test-exec-1")


def test_the_request_is_valid_for_the_sagemaker_api(
    start_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = (
        botocore.session.get_session()
        .get_service_model("sagemaker")
        .operation_model("CreateTrainingJob")
        .input_shape
    )
    for config in (
        {"instance_type": "ml.m5.large"},
        {
            "instance_type": "ml.g5.xlarge",
            "use_spot": True,
            "max_runtime_seconds": 1800,
            "hyperparameters": {"a": "1"},
        },
    ):
        validate_parameters(_request(monkeypatch, config), shape)


def test_spot_training_gets_max_wait_and_a_checkpoint_uri(
    start_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _request(
        monkeypatch, {"instance_type": "ml.m5.large", "use_spot": True, "max_runtime_seconds": 1800}
    )
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://models-bucket/checkpoints/mlpipe-test-exec-1/"}
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train"]  # no validation objects
    assert {"Key": "branch", "Value": "feature/x_1"} in request["Tags"]  # tag values are sanitised


def test_the_train_channel_takes_the_configured_distribution_and_validation_stays_replicated(
    start_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _request(
        monkeypatch,
        {"instance_type": "ml.m5.large", "instance_count": 3, "data_distribution": "ShardedByS3Key"},
    )
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels["train"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert request["ResourceConfig"]["InstanceCount"] == 3
    default = _request(monkeypatch, {"instance_type": "ml.m5.large"})
    assert (
        default["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"]
        == "FullyReplicated"
    )
    both = DataVersion(
        "bucket",
        "datasets/",
        (
            DataObject("datasets/train/a.csv", "v1", "e", 3),
            DataObject("datasets/validation/b.csv", "v1", "e", 3),
        ),
    )
    sharded = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]
        for c in training_job._channels(both, "ShardedByS3Key")
    }
    assert sharded["train"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert sharded["validation"]["S3DataDistributionType"] == "FullyReplicated"  # every host evaluates it


def test_instances_with_local_storage_get_no_volume_key(
    start_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        "VolumeKmsKeyId" not in _request(monkeypatch, {"instance_type": "ml.g4dn.xlarge"})["ResourceConfig"]
    )
    assert "VolumeKmsKeyId" in _request(monkeypatch, {"instance_type": "ml.c5.xlarge"})["ResourceConfig"]


# -- spot savings, content ids, the cache key, tuning requests (issue 11) -----------------------------------------
def test_spot_savings_is_one_minus_billable_over_training_time() -> None:
    assert notify.spot_savings(300, 1000) == 0.7
    assert notify.spot_savings(1000, 1000) == 0.0
    assert notify.spot_savings(1200, 1000) == 0.0  # never negative
    assert notify.spot_savings(300, 0) is None and notify.spot_savings(None, 1000) is None
    assert notify.spot_line({"use_spot": False}) is None
    assert notify.spot_line({"use_spot": True}) == "managed spot (savings known when the job has ended)"


def test_a_content_id_is_the_strongest_checksum_s3_keeps_else_the_etag() -> None:
    head = {"ChecksumCRC32": "NhCmhg==", "ChecksumSHA256": "LPJN...=", "ETag": '"5d41"'}
    assert data_version.content_id(head) == "SHA256:LPJN...="
    assert data_version.content_id({"ChecksumCRC64NVME": "abc=", "ETag": '"5d41"'}) == "CRC64NVME:abc="
    assert data_version.content_id({"ETag": '"5d41402abc4b2a76b9719d911017c592"'}) == (
        "etag:5d41402abc4b2a76b9719d911017c592"
    )


def _cache_inputs(**changes: Any) -> tuple[str, DataVersion, TrainingConfig]:
    objects = (
        DataObject("datasets/train/a.csv", "v1", "e1", 3, "SHA256:aaa="),
        DataObject("datasets/validation/b.csv", "v2", "e2", 3, "SHA256:bbb="),
    )
    config = {
        "instance_type": "ml.m5.large",
        "metric_names": list(MODEL_METRICS),
        "hyperparameters": {"eta": "0.2"},
        **changes.pop("config", {}),
    }
    data = DataVersion("bucket", "datasets/", changes.pop("objects", objects))
    return changes.pop("digest", "sha256:" + "d" * 64), data, TrainingConfig.from_json(json.dumps(config))


def test_the_cache_key_covers_each_input_and_nothing_else() -> None:
    from pipeline_common import training_cache

    key = training_cache.cache_key(*_cache_inputs())
    assert key is not None and re.fullmatch(r"[0-9a-f]{64}", key)
    # The same content under new version ids, ETags and another bucket is the same data.
    same = _cache_inputs(
        objects=(
            DataObject("datasets/validation/b.csv", "v9", "x", 3, "SHA256:bbb="),
            DataObject("datasets/train/a.csv", "v8", "y", 3, "SHA256:aaa="),
        )
    )
    assert training_cache.cache_key(*same) == key
    assert training_cache.cache_key(*_cache_inputs(config={"max_runtime_seconds": 60})) == key
    for changed in (
        _cache_inputs(digest="sha256:" + "e" * 64),
        _cache_inputs(objects=(DataObject("datasets/train/a.csv", "v1", "e1", 3, "SHA256:zzz="),)),
        _cache_inputs(config={"hyperparameters": {"eta": "0.3"}}),
        _cache_inputs(config={"instance_type": "ml.m5.xlarge"}),
        _cache_inputs(config={"instance_count": 2}),
    ):
        assert training_cache.cache_key(*changed) != key
    # Unknown inputs: no key, so no reuse (never a wrong match).
    assert training_cache.cache_key(*_cache_inputs(digest="")) is None
    unknown = (DataObject("datasets/train/a.csv", "v1", "e1", 3),)
    assert training_cache.cache_key(*_cache_inputs(objects=unknown)) is None


def test_tuning_job_names_are_deterministic_short_and_distinct() -> None:
    name = training_job.tuning_job_name("mlpipe-dev-", "3f2c0e4a-1b2c-4d5e-8f90-0123456789ab")
    assert len(name) == 32 and name.startswith("mlpipe-dev-")
    assert name == training_job.tuning_job_name("mlpipe-dev-", "3f2c0e4a-1b2c-4d5e-8f90-0123456789ab")
    assert name != training_job.tuning_job_name("mlpipe-dev-", "3f2c0e4a-1b2c-4d5e-8f90-0123456789ac")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", name)


TUNING = {
    "objective_metric": "validation:rmse",
    "objective_type": "Maximize",
    "strategy": "Random",
    "max_jobs": 5,
    "max_parallel_jobs": 2,
    "max_runtime_seconds": 82800,
    "parameter_ranges": {
        "IntegerParameterRanges": [
            {"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Auto"}
        ]
    },
}


def test_the_tuning_and_warm_pool_requests_are_valid_for_the_sagemaker_api(
    start_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    config = {
        "instance_type": "ml.m5.large",
        "metric_names": list(MODEL_METRICS),
        "hyperparameters": {"max_depth": "6", "eta": "0.2"},
    }
    monkeypatch.setenv("TRAINING_CONFIG", json.dumps({**config, "tuning": TUNING, "use_spot": True}))
    settings = StartTrainingSettings.from_env()
    params = training_job.JobParameters("img:1", "sha256:1", "c" * 40, "main", "o/r", "exec-1", "push")
    data = DataVersion("bucket", "datasets/", (DataObject("datasets/train/a.csv", "v1", "e", 3),))
    request = training_job.tuning_request(settings, params, data, "mlpipe-test-0123456789abcdef0123")
    validate_parameters(request, model.operation_model("CreateHyperParameterTuningJob").input_shape)
    assert request["TrainingJobDefinition"]["StaticHyperParameters"] == {"eta": "0.2"}
    assert {"Key": "tuning-job", "Value": "mlpipe-test-0123456789abcdef0123"} in request["Tags"]
    # Warm pools: only on a training job, and off unless configured.
    assert "KeepAlivePeriodInSeconds" not in _request(monkeypatch, config)["ResourceConfig"]
    warm = _request(monkeypatch, {**config, "keep_alive_seconds": 900})
    assert warm["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 900
    validate_parameters(warm, model.operation_model("CreateTrainingJob").input_shape)


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ([], "object or null"),
        ({**TUNING, "objective_type": "Lowest"}, "Minimize or Maximize"),
        ({**TUNING, "strategy": "Grid"}, "Bayesian or Random"),
        ({**TUNING, "parameter_ranges": {"Ranges": []}}, "parameter_ranges"),
        ({**TUNING, "max_parallel_jobs": 9}, "max_parallel_jobs"),
    ],
)
def test_the_tuning_settings_are_checked(tuning: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TrainingConfig.from_json(json.dumps({"instance_type": "ml.m5.large", "tuning": tuning}))
