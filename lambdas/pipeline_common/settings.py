"""Typed settings read from the Lambda environment that the pipeline stack sets (README: Lambda environment).

Each function reads only what it needs, so a missing variable is reported by name, with the function that
needs it, instead of surfacing as a KeyError deep inside an AWS call.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline_common.errors import ConfigurationError
from pipeline_common.model_package import PackageSpec
from pipeline_common.quality_gate import QualityGate

# SageMaker's own limits.
MAX_RUNTIME_LIMIT_SECONDS = 28 * 24 * 3600
JOB_NAME_PREFIX_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,39}$")


def _env(name: str, purpose: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(
            f"environment variable {name} is not set ({purpose}); the pipeline stack sets it on the function"
        )
    return value


def _optional_env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _prefix(value: str) -> str:
    """An S3 key prefix as the stacks pass it: no leading slash, '' or ending in '/'."""
    value = value.lstrip("/")
    return value if not value or value.endswith("/") else value + "/"


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigurationError(f"TRAINING_CONFIG.{name} must be true or false, got {value!r}")


def _as_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigurationError(f"TRAINING_CONFIG.{name} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"TRAINING_CONFIG.{name} must be an integer, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigurationError(f"TRAINING_CONFIG.{name} must be {bounds}, got {number}")
    return number


def _hyperparameter_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigurationError(f"TRAINING_CONFIG.hyperparameters values must be strings, got {value!r}")


def _metric_names(names: Any) -> tuple[str, ...]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigurationError(
            "TRAINING_CONFIG.metric_names must be the model's metric names (a non-empty list; the stack "
            f"reads them from the model's model.json), got {names!r}"
        )
    return tuple(names)


RANGE_LISTS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")


@dataclass(frozen=True)
class TuningSettings:
    """TRAINING_CONFIG.tuning: run a hyperparameter tuning job instead of one training job. The stack's config
    validated the user's values; this checks the shape the stack wrote."""

    objective_metric: str
    objective_type: str  # Minimize | Maximize
    strategy: str  # Bayesian | Random
    max_jobs: int
    max_parallel_jobs: int
    parameter_ranges: Mapping[str, list[dict[str, Any]]]  # SageMaker's ParameterRanges
    max_runtime_seconds: int

    @property
    def tuned_names(self) -> frozenset[str]:
        return frozenset(r["Name"] for ranges in self.parameter_ranges.values() for r in ranges)

    def as_record(self) -> dict[str, Any]:
        """What the audit record keeps of it (and what the training cache key covers)."""
        return {
            "objective_metric": self.objective_metric,
            "objective_type": self.objective_type,
            "strategy": self.strategy,
            "max_jobs": self.max_jobs,
            "max_parallel_jobs": self.max_parallel_jobs,
            "parameter_ranges": {k: list(v) for k, v in sorted(self.parameter_ranges.items())},
        }

    @classmethod
    def from_raw(cls, raw: Any) -> TuningSettings | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ConfigurationError("TRAINING_CONFIG.tuning must be an object or null")
        metric, objective = raw.get("objective_metric"), raw.get("objective_type")
        strategy, ranges = raw.get("strategy"), raw.get("parameter_ranges")
        if not isinstance(metric, str) or not metric:
            raise ConfigurationError(
                f"TRAINING_CONFIG.tuning.objective_metric must be a metric name, got {metric!r}"
            )
        if objective not in ("Minimize", "Maximize"):
            raise ConfigurationError(
                f"TRAINING_CONFIG.tuning.objective_type must be Minimize or Maximize, got {objective!r}"
            )
        if strategy not in ("Bayesian", "Random"):
            raise ConfigurationError(
                f"TRAINING_CONFIG.tuning.strategy must be Bayesian or Random, got {strategy!r}"
            )
        if (
            not isinstance(ranges, dict)
            or not ranges
            or set(ranges) - set(RANGE_LISTS)
            or not all(
                isinstance(v, list) and all(isinstance(r, dict) and r.get("Name") for r in v)
                for v in ranges.values()
            )
        ):
            raise ConfigurationError(
                f"TRAINING_CONFIG.tuning.parameter_ranges must map {', '.join(RANGE_LISTS)} to lists of named ranges"
            )
        max_jobs = _as_int(raw.get("max_jobs"), "tuning.max_jobs", 1)
        return cls(
            objective_metric=metric,
            objective_type=objective,
            strategy=strategy,
            max_jobs=max_jobs,
            max_parallel_jobs=_as_int(
                raw.get("max_parallel_jobs", 1), "tuning.max_parallel_jobs", 1, max_jobs
            ),
            parameter_ranges={k: [dict(r) for r in v] for k, v in ranges.items()},
            max_runtime_seconds=_as_int(
                raw.get("max_runtime_seconds", MAX_RUNTIME_LIMIT_SECONDS),
                "tuning.max_runtime_seconds",
                120,
                MAX_RUNTIME_LIMIT_SECONDS,
            ),
        )


@dataclass(frozen=True)
class TrainingConfig:
    """TRAINING_CONFIG: the instance, limits and hyperparameters of every training job."""

    instance_type: str
    instance_count: int = 1
    volume_size_gb: int = 30
    max_runtime_seconds: int = 3600
    use_spot: bool = False
    max_wait_seconds: int | None = None
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    keep_alive_seconds: int = 0  # SageMaker warm pool (ResourceConfig.KeepAlivePeriodInSeconds); 0 is none
    cache: bool = True  # reuse a Completed run with the same inputs (pipeline_common.training_cache)
    tuning: TuningSettings | None = None
    # The model's metric names (its model.json, read by the stack at synth): the MetricDefinitions are
    # every channel x these. Required: a job without definitions would report no metrics to gate on.
    metric_names: tuple[str, ...] = ()
    data_distribution: str = "FullyReplicated"  # the train channel's S3DataDistributionType

    @classmethod
    def from_json(cls, text: str) -> TrainingConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"TRAINING_CONFIG is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigurationError("TRAINING_CONFIG must be a JSON object")
        known = {
            "instance_type",
            "instance_count",
            "volume_size_gb",
            "max_runtime_seconds",
            "use_spot",
            "max_wait_seconds",
            "hyperparameters",
            "keep_alive_seconds",
            "cache",
            "tuning",
            "metric_names",
            "data_distribution",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigurationError(
                f"TRAINING_CONFIG has unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        instance_type = raw.get("instance_type")
        if not isinstance(instance_type, str) or not instance_type.startswith("ml."):
            raise ConfigurationError(
                f"TRAINING_CONFIG.instance_type must be a SageMaker type such as ml.m5.large, got {instance_type!r}"
            )
        max_runtime = _as_int(
            raw.get("max_runtime_seconds", 3600), "max_runtime_seconds", 1, MAX_RUNTIME_LIMIT_SECONDS
        )
        use_spot = _as_bool(raw.get("use_spot", False), "use_spot")
        max_wait: int | None = None
        if use_spot:
            # Managed spot needs MaxWaitTimeInSeconds >= MaxRuntimeInSeconds; by default allow as long again
            # waiting for spot capacity as training itself.
            default_wait = min(2 * max_runtime, MAX_RUNTIME_LIMIT_SECONDS)
            max_wait = _as_int(
                raw.get("max_wait_seconds") or default_wait,
                "max_wait_seconds",
                max_runtime,
                MAX_RUNTIME_LIMIT_SECONDS,
            )
        hyperparameters = raw.get("hyperparameters") or {}
        if not isinstance(hyperparameters, dict):
            raise ConfigurationError(
                "TRAINING_CONFIG.hyperparameters must be an object of name -> string value"
            )
        return cls(
            instance_type=instance_type,
            instance_count=_as_int(raw.get("instance_count", 1), "instance_count", 1),
            volume_size_gb=_as_int(raw.get("volume_size_gb", 30), "volume_size_gb", 1),
            max_runtime_seconds=max_runtime,
            use_spot=use_spot,
            max_wait_seconds=max_wait,
            hyperparameters={str(k): _hyperparameter_value(v) for k, v in hyperparameters.items()},
            keep_alive_seconds=_as_int(raw.get("keep_alive_seconds", 0), "keep_alive_seconds", 0, 3600),
            cache=_as_bool(raw.get("cache", True), "cache"),
            tuning=TuningSettings.from_raw(raw.get("tuning")),
            metric_names=_metric_names(raw.get("metric_names")),
            data_distribution=_distribution(raw.get("data_distribution", "FullyReplicated")),
        )


def _distribution(value: Any) -> str:
    if value not in ("FullyReplicated", "ShardedByS3Key"):
        raise ConfigurationError(
            f"TRAINING_CONFIG.data_distribution must be FullyReplicated or ShardedByS3Key, got {value!r}"
        )
    return str(value)


def _job_name_prefix() -> str:
    prefix = _env("JOB_NAME_PREFIX", "training job names and the EventBridge rule are scoped to it")
    if not JOB_NAME_PREFIX_PATTERN.match(prefix):
        raise ConfigurationError(
            f"JOB_NAME_PREFIX {prefix!r} must be 1-40 letters, digits or hyphens, starting with a letter or digit"
        )
    return prefix


@dataclass(frozen=True)
class StartTrainingSettings:
    project_name: str
    env_name: str
    pipeline_name: str
    audit_table_name: str
    data_bucket: str
    data_prefix: str
    model_bucket: str
    model_prefix: str
    checkpoint_prefix: str
    kms_key_arn: str
    sagemaker_role_arn: str
    job_name_prefix: str
    training: TrainingConfig

    @classmethod
    def from_env(cls) -> StartTrainingSettings:
        return cls(
            project_name=_env("PROJECT_NAME", "used in names"),
            env_name=_env("ENV_NAME", "used in names"),
            pipeline_name=_env("PIPELINE_NAME", "the CodePipeline name"),
            audit_table_name=_env("AUDIT_TABLE_NAME", "the DynamoDB audit table"),
            data_bucket=_env("DATA_BUCKET", "the training data bucket"),
            data_prefix=_prefix(_optional_env("DATA_PREFIX")),
            model_bucket=_env("MODEL_BUCKET", "the bucket for model artifacts"),
            model_prefix=_prefix(_optional_env("MODEL_PREFIX")),
            checkpoint_prefix=_prefix(_optional_env("CHECKPOINT_PREFIX", "checkpoints/")),
            kms_key_arn=_env("KMS_KEY_ARN", "encrypts the job output and volume"),
            sagemaker_role_arn=_env("SAGEMAKER_ROLE_ARN", "the training job execution role"),
            job_name_prefix=_job_name_prefix(),
            training=TrainingConfig.from_json(
                _env("TRAINING_CONFIG", "instance type, limits, hyperparameters")
            ),
        )


@dataclass(frozen=True)
class RecordStatusSettings:
    project_name: str
    env_name: str
    pipeline_name: str
    audit_table_name: str
    topic_arn: str
    job_name_prefix: str
    idempotency_table_name: (
        str  # '' turns the Powertools idempotency layer off (the conditional update stays)
    )

    @classmethod
    def from_env(cls) -> RecordStatusSettings:
        return cls(
            project_name=_env("PROJECT_NAME", "used in email subjects"),
            env_name=_env("ENV_NAME", "used in email subjects"),
            pipeline_name=_env("PIPELINE_NAME", "for console links"),
            audit_table_name=_env("AUDIT_TABLE_NAME", "the DynamoDB audit table"),
            topic_arn=_env("TOPIC_ARN", "the SNS topic for notification emails"),
            job_name_prefix=_job_name_prefix(),
            idempotency_table_name=_optional_env("IDEMPOTENCY_TABLE_NAME"),
        )


@dataclass(frozen=True)
class DataTriggerSettings:
    project_name: str
    env_name: str
    pipeline_name: str
    data_bucket: str
    data_prefix: str
    dedup_table_name: str

    @classmethod
    def from_env(cls) -> DataTriggerSettings:
        return cls(
            project_name=_env("PROJECT_NAME", "used in names"),
            env_name=_env("ENV_NAME", "used in names"),
            pipeline_name=_env("PIPELINE_NAME", "the pipeline the data trigger starts"),
            data_bucket=_env("DATA_BUCKET", "the training data bucket"),
            data_prefix=_prefix(_optional_env("DATA_PREFIX")),
            dedup_table_name=_env(
                "IDEMPOTENCY_TABLE_NAME", "remembers which object versions started an execution (dedup)"
            ),
        )


def _group() -> str:
    return _env("MODEL_PACKAGE_GROUP_NAME", "the model registry's group for this project and environment")


@dataclass(frozen=True)
class EvaluateSettings:
    project_name: str
    env_name: str
    pipeline_name: str
    audit_table_name: str
    topic_arn: str
    model_bucket: str
    model_prefix: str
    model_package_group: str
    job_name_prefix: str
    quality_gate: QualityGate

    @classmethod
    def from_env(cls) -> EvaluateSettings:
        return cls(
            project_name=_env("PROJECT_NAME", "used in email subjects"),
            env_name=_env("ENV_NAME", "used in email subjects"),
            pipeline_name=_env("PIPELINE_NAME", "for console links"),
            audit_table_name=_env("AUDIT_TABLE_NAME", "the DynamoDB audit table"),
            topic_arn=_env("TOPIC_ARN", "the SNS topic for notification emails"),
            model_bucket=_env("MODEL_BUCKET", "the bucket of the models and their evaluations"),
            model_prefix=_prefix(_optional_env("MODEL_PREFIX")),
            model_package_group=_group(),
            job_name_prefix=_job_name_prefix(),
            quality_gate=QualityGate.from_json(_env("QUALITY_GATE", "the quality gate's metric and limits")),
        )


@dataclass(frozen=True)
class RegisterSettings:
    project_name: str
    env_name: str
    pipeline_name: str
    audit_table_name: str
    topic_arn: str
    model_package_group: str
    job_name_prefix: str
    package: PackageSpec

    @classmethod
    def from_env(cls) -> RegisterSettings:
        return cls(
            project_name=_env("PROJECT_NAME", "used in email subjects"),
            env_name=_env("ENV_NAME", "used in email subjects"),
            pipeline_name=_env("PIPELINE_NAME", "for console links"),
            audit_table_name=_env("AUDIT_TABLE_NAME", "the DynamoDB audit table"),
            topic_arn=_env("TOPIC_ARN", "the SNS topic for notification emails"),
            model_package_group=_group(),
            job_name_prefix=_job_name_prefix(),
            package=PackageSpec.from_json(
                _env("REGISTRY_CONFIG", "auto_approve, inference instance types and content types")
            ),
        )


@dataclass(frozen=True)
class RecordApprovalSettings:
    project_name: str
    env_name: str
    pipeline_name: str
    audit_table_name: str
    topic_arn: str
    model_package_group: str
    idempotency_table_name: str  # '' turns the Powertools idempotency layer off (the conditional writes stay)

    @classmethod
    def from_env(cls) -> RecordApprovalSettings:
        return cls(
            project_name=_env("PROJECT_NAME", "used in email subjects"),
            env_name=_env("ENV_NAME", "used in email subjects"),
            pipeline_name=_env("PIPELINE_NAME", "for console links"),
            audit_table_name=_env("AUDIT_TABLE_NAME", "the DynamoDB audit table"),
            topic_arn=_env("TOPIC_ARN", "the SNS topic for notification emails"),
            model_package_group=_group(),
            idempotency_table_name=_optional_env("IDEMPOTENCY_TABLE_NAME"),
        )
