"""The CreateTrainingJob and CreateHyperParameterTuningJob requests, built from the settings, the action's
parameters and the data version; the job names; and the action's output variables."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline_common.data_version import CHANNELS, MANIFEST_NAME, DataVersion
from pipeline_common.metrics import metric_definitions
from pipeline_common.settings import StartTrainingSettings

MAX_JOB_NAME = 63
MAX_TUNING_JOB_NAME = 32
MAX_TAG_VALUE = 256
# What a run is: one training job, or a hyperparameter tuning job (record `kind`, token `kind`).
KIND_TRAINING = "training"
KIND_TUNING = "tuning"
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9-]+")
_NOT_TAG_CHAR = re.compile(r"[^\w\s.:/=+\-@]")

# Tag keys on the job; record-status rebuilds a record from them if its event arrives first.
TAG_COMMIT = "commit"
TAG_REPO = "repo"
TAG_BRANCH = "branch"
TAG_EXECUTION = "pipeline-execution"
TAG_TRIGGER = "trigger"
TAG_DATA_VERSION = "data-version"
TAG_IMAGE_DIGEST = "image-digest"
# On a tuning job, and so on every training job it launches (SageMaker copies a tuning job's tags to them).
TAG_TUNING_JOB = "tuning-job"


@dataclass(frozen=True)
class JobParameters:
    """The Train action's user parameters (README: train action user parameters)."""

    image_uri: str
    image_digest: str
    commit_id: str
    branch: str
    repo: str
    pipeline_execution_id: str
    trigger: str
    retrain: bool = False  # the RETRAIN pipeline variable: a fresh run even if an identical one exists


def job_name(prefix: str, pipeline_execution_id: str) -> str:
    """`<prefix><execution id>`, made a valid SageMaker name: [a-zA-Z0-9-], at most 63, alphanumeric ends.

    Deterministic, so a retried invocation asks for the same name and gets ResourceInUse instead of a
    second job. A name that must be shortened keeps a hash of the whole so it stays unique.
    """
    full = _NOT_NAME_CHAR.sub("-", f"{prefix}{pipeline_execution_id}").strip("-")
    if len(full) > MAX_JOB_NAME:
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        full = f"{full[: MAX_JOB_NAME - 9].rstrip('-')}-{digest}"
    return full or "job"


def tuning_job_name(prefix: str, pipeline_execution_id: str) -> str:
    """`<prefix><hash of the execution id>`, at most 32 characters (SageMaker's limit for tuning jobs).

    Deterministic like `job_name`, so a retry gets ResourceInUse for its own tuning job. The config keeps the
    prefix short enough to leave at least 12 hex digits of the hash. SageMaker names the tuning job's training
    jobs `<tuning job>-<nnn>-<8 hex>`, so they too start with the prefix (IAM and the rule cover them).
    """
    digest = hashlib.sha256(pipeline_execution_id.encode()).hexdigest()
    return f"{prefix}{digest[: MAX_TUNING_JOB_NAME - len(prefix)]}"


def output_variables(
    kind: str, job_name: str, model_artifact: str, best_training_job: str = ""
) -> dict[str, str]:
    """The Train action's output variables (README: Train action output variables)."""
    if kind == KIND_TUNING:
        return {
            "MODEL_ARTIFACT": model_artifact,
            "TRAINING_JOB_NAME": best_training_job,
            "TUNING_JOB_NAME": job_name,
        }
    return {"MODEL_ARTIFACT": model_artifact, "TRAINING_JOB_NAME": job_name}


def outputs_of_record(record: Mapping[str, Any]) -> dict[str, str]:
    """The output variables of the run an audit record describes (a reused run's, on a cache hit)."""
    return output_variables(
        str(record.get("kind") or KIND_TRAINING),
        str(record["job_name"]),
        str(record.get("model_artifact") or ""),
        str(record.get("best_training_job") or ""),
    )


# Families with local NVMe instance storage: SageMaker rejects VolumeKmsKeyId for them (the local volume is
# encrypted with a hardware module instead).
_LOCAL_STORAGE_FAMILIES = frozenset(
    {"g4dn", "g5", "g6", "g6e", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "trn1", "trn1n", "inf2"}
)


def has_local_storage(instance_type: str) -> bool:
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return family in _LOCAL_STORAGE_FAMILIES or (len(family) > 2 and family.endswith("d"))


def tag_value(value: str) -> str:
    """SageMaker tag values allow letters, digits, spaces and `_.:/=+-@`, at most 256 characters."""
    return _NOT_TAG_CHAR.sub("_", value)[:MAX_TAG_VALUE]


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def checkpoint_uri(settings: StartTrainingSettings, name: str) -> str:
    return s3_uri(settings.model_bucket, f"{settings.checkpoint_prefix}{name}/")


def output_path(settings: StartTrainingSettings) -> str:
    return s3_uri(settings.model_bucket, settings.model_prefix)


def manifest_key(settings: StartTrainingSettings, name: str) -> str:
    """The job's data manifest, next to its model: `<model prefix><job>/data-manifest.json`."""
    return f"{settings.model_prefix}{name}/{MANIFEST_NAME}"


def model_artifact_uri(settings: StartTrainingSettings, name: str) -> str:
    """Where SageMaker puts the model: `<S3OutputPath>/<job>/output/model.tar.gz`."""
    return f"{output_path(settings).rstrip('/')}/{name}/output/model.tar.gz"


def _channel(name: str, uri: str, distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": distribution,
            }
        },
        "InputMode": "File",
    }


def tags(params: JobParameters, data: DataVersion, tuning_job: str = "") -> list[dict[str, str]]:
    values = {
        TAG_COMMIT: params.commit_id,
        TAG_REPO: params.repo,
        TAG_BRANCH: params.branch,
        TAG_EXECUTION: params.pipeline_execution_id,
        TAG_TRIGGER: params.trigger,
        TAG_DATA_VERSION: data.manifest_hash,
        TAG_IMAGE_DIGEST: params.image_digest,
        TAG_TUNING_JOB: tuning_job,
    }
    return [{"Key": key, "Value": tag_value(value)} for key, value in values.items() if value]


def _channels(data: DataVersion, distribution: str = "FullyReplicated") -> list[dict[str, Any]]:
    """train always, with the configured distribution (an empty one fails in the container with a
    sentence); the others FullyReplicated (every host evaluates them), and only when objects exist under
    them: SageMaker fails a job whose channel has no objects."""
    return [
        _channel(
            channel,
            s3_uri(data.bucket, f"{data.prefix}{channel}/"),
            distribution if channel == "train" else "FullyReplicated",
        )
        for channel in CHANNELS
        if channel == "train" or data.has_channel(channel)
    ]


def _resource_config(settings: StartTrainingSettings) -> dict[str, Any]:
    config = settings.training
    resources: dict[str, Any] = {
        "InstanceType": config.instance_type,
        "InstanceCount": config.instance_count,
        "VolumeSizeInGB": config.volume_size_gb,
    }
    if not has_local_storage(config.instance_type):
        resources["VolumeKmsKeyId"] = settings.kms_key_arn
    return resources


def _algorithm(settings: StartTrainingSettings, params: JobParameters) -> dict[str, Any]:
    return {
        "TrainingImage": params.image_uri,
        "TrainingInputMode": "File",
        "MetricDefinitions": metric_definitions(settings.training.metric_names),
    }


def create_request(
    settings: StartTrainingSettings, params: JobParameters, data: DataVersion, name: str
) -> dict[str, Any]:
    """The CreateTrainingJob request (boto3 keyword arguments)."""
    config = settings.training
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": config.max_runtime_seconds}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": _algorithm(settings, params),
        "RoleArn": settings.sagemaker_role_arn,
        "InputDataConfig": _channels(data, config.data_distribution),
        "OutputDataConfig": {"S3OutputPath": output_path(settings), "KmsKeyId": settings.kms_key_arn},
        "ResourceConfig": _resource_config(settings),
        "StoppingCondition": stopping,
        "HyperParameters": dict(config.hyperparameters),
        "Tags": tags(params, data),
    }
    if config.keep_alive_seconds:
        # A warm pool: the instances wait this long for the next matching job (billed meanwhile).
        request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = config.keep_alive_seconds
    if config.use_spot:
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = config.max_wait_seconds or config.max_runtime_seconds
        request["CheckpointConfig"] = {"S3Uri": checkpoint_uri(settings, name)}
    return request


def tuning_request(
    settings: StartTrainingSettings, params: JobParameters, data: DataVersion, name: str
) -> dict[str, Any]:
    """The CreateHyperParameterTuningJob request: the training job definition is `create_request`'s (same
    image, channels, key, output, instances, spot), with the tuned hyperparameters taken out of the static ones."""
    config = settings.training
    tuning = config.tuning
    if tuning is None:
        raise ValueError("tuning_request needs TRAINING_CONFIG.tuning")
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": config.max_runtime_seconds}
    definition: dict[str, Any] = {
        "StaticHyperParameters": {
            k: v for k, v in config.hyperparameters.items() if k not in tuning.tuned_names
        },
        "AlgorithmSpecification": _algorithm(settings, params),
        "RoleArn": settings.sagemaker_role_arn,
        "InputDataConfig": _channels(data, config.data_distribution),
        "OutputDataConfig": {"S3OutputPath": output_path(settings), "KmsKeyId": settings.kms_key_arn},
        "ResourceConfig": _resource_config(settings),
        "StoppingCondition": stopping,
    }
    if config.use_spot:
        # Spot without checkpoints: the API does not say that the trials of one tuning job get separate
        # checkpoint folders, and a trial must never resume from another trial's model. An interrupted
        # trial restarts from its first round instead.
        definition["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = config.max_wait_seconds or config.max_runtime_seconds
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": tuning.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": tuning.objective_type,
                "MetricName": tuning.objective_metric,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": tuning.max_jobs,
                "MaxParallelTrainingJobs": tuning.max_parallel_jobs,
                "MaxRuntimeInSeconds": tuning.max_runtime_seconds,
            },
            "ParameterRanges": {k: [dict(r) for r in v] for k, v in tuning.parameter_ranges.items()},
            "TrainingJobEarlyStoppingType": "Off",
        },
        "TrainingJobDefinition": definition,
        "Tags": tags(params, data, tuning_job=name),
    }
