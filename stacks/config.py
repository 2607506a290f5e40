"""Typed, validated configuration for the CDK app, read from cdk.json context.

Every key is a flat top-level context key so any of them can be overridden with `-c key=value`.
Values given with `-c` arrive as strings, so numbers, booleans, lists and maps also accept their
string forms ("2", "true", "a@x.com,b@y.com", '{"eta": "0.1"}').

Precedence (lowest first): cdk.json, the git-ignored cdk.local.json, `-c` / explicit overrides.
A bad value raises ConfigError with ONE line naming the key and what is expected; app.py turns it
into a one-line exit instead of a jsii stack trace.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline_common.metrics import metric_definitions

from stacks.model import DEFAULT_MODEL_DIR, ModelDirError, check_model_dir, metric_names

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# CloudWatch Logs accepts only these retention values (RetentionDays in CDK).
VALID_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
# CodePipeline fails a Lambda invoke action 24 hours after it started, continuation tokens or not, so a job
# watched by the Train action must end well within that: 23 hours for the job (spot: including the wait
# for capacity), one for queueing, start-up and the last polls. SageMaker itself would allow 5 days.
MAX_ACTION_SECONDS = 23 * 3600
ACTION_LIMIT_REASON = "23 h: CodePipeline fails the Train action 24 h after it starts"
# Training job names are at most 63 characters: the prefix plus a 36-character pipeline execution id.
MAX_JOB_NAME_PREFIX = 63 - 36
# Tuning job names are at most 32 characters: the prefix plus a hash of the execution id, which must keep
# at least 12 hex digits (48 bits) so two executions practically never share a name.
MAX_TUNING_JOB_NAME_PREFIX = 32 - 12
# SageMaker warm pools: KeepAlivePeriodInSeconds is at most 3600 (Developer Guide, "Managed Warm Pools").
MAX_KEEP_ALIVE_SECONDS = 3600
# Our own cap on trials: record-status describes every trial of a finished tuning job for its summary.
MAX_TUNING_JOBS = 100
TUNING_STRATEGIES = ("Bayesian", "Random")
TUNING_DIRECTIONS = ("Minimize", "Maximize")
RANGE_TYPES = ("integer", "continuous", "categorical")
# SageMaker's ScalingType values; Auto lets SageMaker choose.
RANGE_SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
MAX_CATEGORICAL_VALUES = 30

_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$|^[a-z]$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CONNECTION_ARN = re.compile(
    rf"^arn:aws:(codestar-connections|codeconnections):(?P<region>[a-z0-9-]+):\d{{12}}:connection/{_UUID}$"
)
_LAYER_ARN = re.compile(r"^arn:aws:lambda:(?P<region>[a-z0-9-]+):\d{12}:layer:[A-Za-z0-9_-]+:\d+$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_BRANCH = re.compile(r"^(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,250}(?<!/)$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$")
_HP_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
GATE_DIRECTIONS = ("minimize", "maximize")
# Opt-in cdk-nag rule packs, by the names `compliance_packs` accepts (stacks/nag.py maps them to packs).
COMPLIANCE_PACKS = ("nist-800-53-r5", "hipaa", "pci-dss-3.2.1")


class ConfigError(ValueError):
    """A context value is missing or malformed. str(error) is one line naming the key."""

    def __init__(self, key: str, expected: str, got: Any = None, *, missing: bool = False) -> None:
        detail = "missing" if missing else f"got {got!r}"
        super().__init__(f"{key}: expected {expected} ({detail})")
        self.key = key


# Keys the app reads; everything else in context (feature flags, lookups) is left to CDK.
REQUIRED_KEYS = (
    "env_name",
    "account",
    "region",
    "github_owner",
    "github_repo",
    "connection_arn",
    "notification_emails",
    "powertools_layer_arn",
)
DEFAULTS: dict[str, Any] = {
    "project_name": "mlpipe",
    "github_branch": "main",
    "data_prefix": "datasets/",
    "model_prefix": "models/",
    "checkpoint_prefix": "checkpoints/",
    "training_instance_type": "ml.m5.large",
    "training_instance_count": 1,
    "training_data_distribution": "FullyReplicated",
    "training_volume_size_gb": 30,
    "training_max_runtime_seconds": 3600,
    "training_use_spot": False,
    "training_max_wait_seconds": None,
    "hyperparameters": {},
    "model_dir": DEFAULT_MODEL_DIR,
    "training_keep_alive_seconds": 0,
    "training_cache": True,
    "tuning": None,
    "ecr_keep_images": 20,
    "log_retention_days": 30,
    "compliance_packs": [],
    "quality_gate": {
        "metric": "validation:rmse",
        "direction": "minimize",
        "max_regression": 0.02,
        "floor": None,
    },
    "auto_approve": False,
    "inference_instance_types": ["ml.m5.large"],
    # The deploy half (stacks/deploy_stack.py); each is parsed by `_deploy` below.
    "staging_endpoint": {
        "instance_type": "ml.m5.large",
        "instance_count": 1,
        "min_capacity": 1,
        "max_capacity": 2,
    },
    "production_endpoint": {
        "instance_type": "ml.m5.large",
        "instance_count": 2,
        "min_capacity": 2,
        "max_capacity": 4,
    },
    "data_capture": True,
    "golden_test": {"rows": 20, "p99_ms": 1000, "tolerance": 1e-4},
    "production_manual_approval": True,
    "guardrail": {"type": "canary", "size_percent": 50, "wait_seconds": 600},
    "api_auth": "iam",
    "api_throttle": {"rate_per_second": 50, "burst": 100},
    "batch_transform": None,
}
CONFIG_KEYS = (*REQUIRED_KEYS, *DEFAULTS)
DATA_DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")


# -- parsing helpers: each raises ConfigError naming the key ----------------------------------------------
def _string(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str], expected: str) -> str:
    value = raw.get(key)
    if value is None or value == "":
        raise ConfigError(key, expected, missing=True)
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(key, expected, value)
    return value


def _int(raw: Mapping[str, Any], key: str, low: int, high: int, why: str = "") -> int:
    value = raw.get(key)
    expected = f"an integer from {low} to {high}" + (f" ({why})" if why else "")
    if value is None or value == "":
        raise ConfigError(key, expected, missing=True)
    if isinstance(value, bool):
        raise ConfigError(key, expected, value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, expected, value)
    return value


def _bool(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, "true or false", value, missing=value is None)


def _maybe_json(value: Any) -> Any:
    """`-c` gives strings; accept JSON for lists and maps."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _emails(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    expected = "a non-empty list of email addresses"
    value = _maybe_json(raw.get(key))
    if value is None or value == "" or value == []:
        raise ConfigError(key, expected, missing=True)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list):
        raise ConfigError(key, expected, value)
    for item in value:
        if not isinstance(item, str) or not _EMAIL.match(item):
            raise ConfigError(key, "valid email addresses like ml-team@example.com", item)
    return tuple(value)


def _compliance_packs(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    expected = f"a list (or comma-separated string) of {', '.join(COMPLIANCE_PACKS)}"
    value = _maybe_json(raw.get(key))
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(key, expected, value)
    for item in value:
        if item not in COMPLIANCE_PACKS:
            raise ConfigError(key, expected, item)
    return tuple(dict.fromkeys(value))


def _hyperparameters(raw: Mapping[str, Any], key: str) -> dict[str, str]:
    expected = "an object of string names to string values"
    value = _maybe_json(raw.get(key))
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, expected, value)
    for name, item in value.items():
        # SageMaker passes hyperparameters as strings; a number here would be silently stringified.
        if not _HP_NAME.match(name) or not isinstance(item, str) or len(item) > 2500:
            raise ConfigError(f"{key}.{name}", expected, item)
    return dict(value)


def _model_dir(values: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """`model_dir` and the metric names its model.json declares (checked against SageMaker's limits)."""
    key = "model_dir"
    value = values.get(key)
    if not isinstance(value, str):
        raise ConfigError(key, "a model folder inside the repository, like container/user_model", value)
    try:
        return check_model_dir(value), metric_names(value)
    except ModelDirError as error:
        raise ConfigError(key, str(error), value) from None


def training_metric_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The metric names every training job reports (its MetricDefinitions, built from the model's
    manifest names): what a quality gate or a tuning objective may use."""
    return tuple(definition["Name"] for definition in metric_definitions(names))


def _number(value: Any, key: str, expected: str, low: float, high: float | None = None) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(key, expected, value) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, expected, value)
    if value < low or (high is not None and value > high):
        raise ConfigError(key, expected, value)
    return float(value)


@dataclass(frozen=True)
class QualityGate:
    """The Evaluate stage's rule: `metric` may be at most `max_regression` (a fraction) worse than the
    approved model's, and must meet `floor` (if set) on its own. `direction` says which way is better."""

    metric: str
    direction: str
    max_regression: float
    floor: float | None = None

    def to_json(self) -> str:
        """The QUALITY_GATE Lambda variable (README interface)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def _quality_gate(values: Mapping[str, Any], names: tuple[str, ...]) -> QualityGate:
    key = "quality_gate"
    raw = _maybe_json(values.get(key))
    expected = 'an object like {"metric": "validation:rmse", "direction": "minimize", "max_regression": 0.02}'
    if not isinstance(raw, dict):
        raise ConfigError(key, expected, raw, missing=raw is None)
    unknown = sorted(set(raw) - {"metric", "direction", "max_regression", "floor"})
    if unknown:
        raise ConfigError(key, "only the keys metric, direction, max_regression and floor", unknown[0])
    metric = raw.get("metric")
    if metric not in names:
        # Checked at synth: a gate on a metric no job reports would fail every run at Evaluate.
        raise ConfigError(
            f"{key}.metric", f"one of the training job's metric names ({', '.join(names)})", metric
        )
    direction = raw.get("direction")
    if direction not in GATE_DIRECTIONS:
        raise ConfigError(f"{key}.direction", "minimize or maximize", direction)
    max_regression = _number(
        raw.get("max_regression", 0.0),
        f"{key}.max_regression",
        "a fraction from 0 to 1 (0.02 allows 2% worse than the approved model)",
        0.0,
        1.0,
    )
    floor = raw.get("floor")
    return QualityGate(
        metric=str(metric),
        direction=str(direction),
        max_regression=max_regression,
        floor=None
        if floor is None or floor == ""
        else _number(floor, f"{key}.floor", "a number, or null for no floor", -math.inf),
    )


def _instance_types(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    expected = "a non-empty list of SageMaker instance types like ml.m5.large"
    value = _maybe_json(raw.get(key))
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not value:
        raise ConfigError(key, expected, missing=True)
    if not isinstance(value, list):
        raise ConfigError(key, expected, value)
    for item in value:
        if not isinstance(item, str) or not _INSTANCE_TYPE.match(item):
            raise ConfigError(key, expected, item)
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class RegistryConfig:
    """What the Evaluate and Register stages need beyond the resources: the gate and the package's spec."""

    quality_gate: QualityGate
    auto_approve: bool
    inference_instance_types: tuple[str, ...]


@dataclass(frozen=True)
class TuningConfig:
    """A SageMaker hyperparameter tuning job instead of one training job (config key `tuning`)."""

    objective_metric: str  # one of the MetricDefinitions names, e.g. validation:rmse
    objective_type: str  # Minimize | Maximize
    strategy: str  # Bayesian | Random
    max_jobs: int
    max_parallel_jobs: int
    # SageMaker's ParameterRanges: IntegerParameterRanges, ContinuousParameterRanges, CategoricalParameterRanges.
    parameter_ranges: dict[str, list[dict[str, Any]]]
    # The whole tuning job's limit (ResourceLimits.MaxRuntimeInSeconds): it ends before the Train action does.
    max_runtime_seconds: int = MAX_ACTION_SECONDS

    @property
    def tuned_names(self) -> tuple[str, ...]:
        return tuple(r["Name"] for ranges in self.parameter_ranges.values() for r in ranges)


@dataclass(frozen=True)
class TrainingConfig:
    instance_type: str
    instance_count: int
    volume_size_gb: int
    max_runtime_seconds: int
    use_spot: bool
    max_wait_seconds: int | None
    hyperparameters: dict[str, str] = field(default_factory=dict)
    keep_alive_seconds: int = 0  # SageMaker warm pool after the job (0: none)
    cache: bool = True  # reuse a Completed run with the same inputs instead of training again
    tuning: TuningConfig | None = None
    # The model's metric names (its model.json); start-training builds the MetricDefinitions from them.
    metric_names: tuple[str, ...] = ()

    @property
    def metric_definition_names(self) -> tuple[str, ...]:
        """`<channel>:<name>` of every MetricDefinition: what the gate and a tuning objective may name."""
        return training_metric_names(self.metric_names)

    # The train channel's S3DataDistributionType: each host reads every file and takes its part
    # (FullyReplicated), or SageMaker gives each host its own files (ShardedByS3Key). Validation: replicated.
    data_distribution: str = "FullyReplicated"

    def to_json(self) -> str:
        """The TRAINING_CONFIG Lambda variable (README interface)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PipelineConfig:
    project_name: str
    env_name: str
    account: str
    region: str
    github_owner: str
    github_repo: str
    github_branch: str
    connection_arn: str
    notification_emails: tuple[str, ...]
    data_prefix: str
    model_prefix: str
    checkpoint_prefix: str
    training: TrainingConfig
    ecr_keep_images: int
    log_retention_days: int
    powertools_layer_arn: str
    registry: RegistryConfig
    model_dir: str = DEFAULT_MODEL_DIR  # the model folder the image is built with (relative to the repo)
    compliance_packs: tuple[
        str, ...
    ] = ()  # extra cdk-nag packs run on every synth (names in COMPLIANCE_PACKS)
    deploy: DeployConfig | None = None  # the deploy half; from_mapping always sets it

    @property
    def deploy_stack_name(self) -> str:
        return f"ModelDeploy-{self.env_name}"

    @property
    def deploy_pipeline_name(self) -> str:
        return f"{self.project_name}-{self.env_name}-deploy"

    def endpoint_name(self, stage: str) -> str:
        """The endpoint of one stage (staging, production): fixed, so the API, the alarms and IAM can name it
        before the first deploy creates it."""
        return f"{self.project_name}-{self.env_name}-{stage}"

    @property
    def job_name_prefix(self) -> str:
        """Lower case: SageMaker lowercases job names in ARNs, and IAM matches ARNs case-sensitively."""
        return f"{self.project_name}-{self.env_name}-"

    @property
    def pipeline_name(self) -> str:
        return f"{self.project_name}-{self.env_name}"

    @property
    def model_package_group_name(self) -> str:
        """One model package group per project and environment, in the data stack (it outlives pipelines)."""
        return f"{self.project_name}-{self.env_name}"

    @property
    def data_stack_name(self) -> str:
        return f"TrainingData-{self.env_name}"

    @property
    def pipeline_stack_name(self) -> str:
        return f"TrainingPipeline-{self.env_name}"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PipelineConfig:
        values = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
        name_expected = "lower-case letters, digits and dashes, starting with a letter"
        project = _string(values, "project_name", _NAME, name_expected)
        env_name = _string(values, "env_name", _NAME, name_expected)
        if len(project) + len(env_name) + 2 > MAX_JOB_NAME_PREFIX:
            raise ConfigError(
                "env_name",
                f"project_name and env_name together at most {MAX_JOB_NAME_PREFIX - 2} characters "
                "(training job names are limited to 63)",
                f"{project}-{env_name}",
            )
        region = _string(values, "region", _REGION, "an AWS region like us-east-1")
        connection_arn = _string(
            values,
            "connection_arn",
            _CONNECTION_ARN,
            "arn:aws:codeconnections:<region>:<12-digit account>:connection/<uuid>",
        )
        layer_arn = _string(
            values,
            "powertools_layer_arn",
            _LAYER_ARN,
            "arn:aws:lambda:<region>:<account>:layer:<name>:<version>",
        )
        layer_region = _LAYER_ARN.match(layer_arn)["region"]  # type: ignore[index]
        if layer_region != region:
            # Lambda can only attach layers from the function's own region.
            raise ConfigError("powertools_layer_arn", f"a layer in region {region}", layer_arn)
        prefix_expected = "an S3 key prefix ending with '/' and not starting with '/', like datasets/"
        data_prefix = _string(values, "data_prefix", _PREFIX, prefix_expected)
        model_prefix = _string(values, "model_prefix", _PREFIX, prefix_expected)
        checkpoint_prefix = _string(values, "checkpoint_prefix", _PREFIX, prefix_expected)
        if model_prefix == checkpoint_prefix:
            raise ConfigError("checkpoint_prefix", "a prefix different from model_prefix", checkpoint_prefix)
        model_dir, names = _model_dir(values)
        training = _training(values, names)
        if training.tuning is not None and len(project) + len(env_name) + 2 > MAX_TUNING_JOB_NAME_PREFIX:
            raise ConfigError(
                "env_name",
                f"project_name and env_name together at most {MAX_TUNING_JOB_NAME_PREFIX - 2} characters with "
                "tuning (tuning job names are limited to 32)",
                f"{project}-{env_name}",
            )
        return cls(
            project_name=project,
            env_name=env_name,
            account=_string(values, "account", _ACCOUNT, "a 12-digit AWS account id"),
            region=region,
            github_owner=_string(values, "github_owner", _GITHUB_NAME, "a GitHub user or organization name"),
            github_repo=_string(values, "github_repo", _GITHUB_NAME, "a GitHub repository name"),
            github_branch=_string(values, "github_branch", _BRANCH, "a git branch name"),
            connection_arn=connection_arn,
            notification_emails=_emails(values, "notification_emails"),
            data_prefix=data_prefix,
            model_prefix=model_prefix,
            checkpoint_prefix=checkpoint_prefix,
            training=training,
            ecr_keep_images=_int(values, "ecr_keep_images", 1, 1000),
            log_retention_days=_log_retention(values),
            powertools_layer_arn=layer_arn,
            registry=RegistryConfig(
                quality_gate=_quality_gate(values, training.metric_definition_names),
                auto_approve=_bool(values, "auto_approve"),
                inference_instance_types=_instance_types(values, "inference_instance_types"),
            ),
            model_dir=model_dir,
            compliance_packs=_compliance_packs(values, "compliance_packs"),
            deploy=_deploy(values),
        )


def _training(values: Mapping[str, Any], names: tuple[str, ...]) -> TrainingConfig:
    instance_type = _string(
        values, "training_instance_type", _INSTANCE_TYPE, "a SageMaker instance type like ml.m5.large"
    )
    max_runtime = _int(values, "training_max_runtime_seconds", 1, MAX_ACTION_SECONDS, ACTION_LIMIT_REASON)
    use_spot = _bool(values, "training_use_spot")
    max_wait: int | None = None
    if use_spot:
        # Managed spot training requires MaxWaitTimeInSeconds >= MaxRuntimeInSeconds.
        if values.get("training_max_wait_seconds") in (None, ""):
            raise ConfigError(
                "training_max_wait_seconds",
                f"an integer >= training_max_runtime_seconds ({max_runtime}) when training_use_spot is true",
                missing=True,
            )
        max_wait = _int(values, "training_max_wait_seconds", 1, MAX_ACTION_SECONDS, ACTION_LIMIT_REASON)
        if max_wait < max_runtime:
            raise ConfigError(
                "training_max_wait_seconds",
                f"an integer >= training_max_runtime_seconds ({max_runtime}) when training_use_spot is true",
                max_wait,
            )
    tuning = _tuning(values, "tuning", max_wait or max_runtime, training_metric_names(names))
    keep_alive = _int(
        values,
        "training_keep_alive_seconds",
        0,
        MAX_KEEP_ALIVE_SECONDS,
        "SageMaker's warm pool limit; 0 is off",
    )
    if keep_alive and use_spot:
        raise ConfigError(
            "training_keep_alive_seconds",
            "0 when training_use_spot is true (SageMaker warm pools cannot be used with spot instances)",
            keep_alive,
        )
    if keep_alive and tuning is not None:
        raise ConfigError(
            "training_keep_alive_seconds",
            "0 with tuning (SageMaker keeps no warm pools for the training jobs of a tuning job)",
            keep_alive,
        )
    return TrainingConfig(
        instance_type=instance_type,
        instance_count=_int(values, "training_instance_count", 1, 100),
        volume_size_gb=_int(values, "training_volume_size_gb", 1, 16384),
        max_runtime_seconds=max_runtime,
        use_spot=use_spot,
        max_wait_seconds=max_wait,
        hyperparameters=_hyperparameters(values, "hyperparameters"),
        keep_alive_seconds=keep_alive,
        cache=_bool(values, "training_cache"),
        tuning=tuning,
        metric_names=names,
        data_distribution=_choice(
            values.get("training_data_distribution", "FullyReplicated"),
            "training_data_distribution",
            DATA_DISTRIBUTIONS,
        ),
    )


def _is_off(value: Any) -> bool:
    return (
        value is None
        or value is False
        or (isinstance(value, str) and value.strip().lower() in ("", "none", "off"))
    )


def _number_of_kind(value: Any, key: str, expected: str, kind: type) -> int | float:
    """An integer (kind int) or any finite number (kind float), also from its string form."""
    if isinstance(value, str):
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            raise ConfigError(key, expected, value) from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise ConfigError(key, expected, value)
    if not math.isfinite(value):
        raise ConfigError(key, expected, value)
    return value


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, in any letter case (minimize, Minimize)."""
    expected = f"one of {', '.join(choices)}"
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
    raise ConfigError(key, expected, value, missing=value is None)


def _parameter_range(key: str, name: str, spec: Any) -> tuple[str, dict[str, Any]]:
    """(SageMaker range list name, one range) from `{"type": "integer", "min": 2, "max": 10, "scaling": ...}`
    or `{"type": "categorical", "values": [...]}`."""
    expected = (
        'an object like {"type": "integer", "min": 2, "max": 10}, {"type": "continuous", "min": 0.01, '
        '"max": 0.5, "scaling": "Logarithmic"} or {"type": "categorical", "values": ["a", "b"]}'
    )
    if not _HP_NAME.match(name):
        raise ConfigError(key, "hyperparameter names of letters, digits and _.:-", name)
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(key, expected, spec)
    kind = _choice(spec["type"], f"{key}.type", RANGE_TYPES)
    if kind == "categorical":
        allowed = {"type", "values"}
        values = spec.get("values")
        if (
            not isinstance(values, list)
            or not 1 <= len(values) <= MAX_CATEGORICAL_VALUES
            or not all(isinstance(v, str) and v for v in values)
            or len(set(values)) != len(values)
        ):
            raise ConfigError(
                f"{key}.values", f"1 to {MAX_CATEGORICAL_VALUES} different non-empty strings", values
            )
        if set(spec) - allowed:
            raise ConfigError(key, f"only {', '.join(sorted(allowed))}", sorted(set(spec) - allowed))
        return "CategoricalParameterRanges", {"Name": name, "Values": list(values)}
    allowed = {"type", "min", "max", "scaling"}
    if set(spec) - allowed:
        raise ConfigError(key, f"only {', '.join(sorted(allowed))}", sorted(set(spec) - allowed))
    number_kind = int if kind == "integer" else float
    expected_number = "an integer" if kind == "integer" else "a number"
    low = _number_of_kind(spec.get("min"), f"{key}.min", expected_number, number_kind)
    high = _number_of_kind(
        spec.get("max"), f"{key}.max", f"{expected_number} greater than min ({low})", number_kind
    )
    if high <= low:
        raise ConfigError(f"{key}.max", f"{expected_number} greater than min ({low})", high)
    scaling = _choice(spec.get("scaling", "Auto"), f"{key}.scaling", RANGE_SCALINGS)
    if scaling == "Logarithmic" and low <= 0:
        raise ConfigError(f"{key}.min", "a number > 0 with Logarithmic scaling", low)
    if scaling == "ReverseLogarithmic" and (kind == "integer" or low < 0 or high >= 1):
        raise ConfigError(
            f"{key}.scaling", "ReverseLogarithmic only for a continuous range within 0 <= x < 1", scaling
        )
    list_name = "IntegerParameterRanges" if kind == "integer" else "ContinuousParameterRanges"
    # SageMaker takes range bounds as strings.
    return list_name, {"Name": name, "MinValue": str(low), "MaxValue": str(high), "ScalingType": scaling}


def _tuning(
    values: Mapping[str, Any], key: str, trial_seconds: int, metrics: tuple[str, ...]
) -> TuningConfig | None:
    """`tuning`: off by default; an object (or its JSON with `-c`) turns the Train stage into a tuning job."""
    value = _maybe_json(values.get(key))
    if _is_off(value):
        return None
    known = {"objective_metric", "direction", "strategy", "max_jobs", "max_parallel_jobs", "ranges"}
    if not isinstance(value, dict):
        raise ConfigError(key, f"an object with {', '.join(sorted(known))} (or none)", value)
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(key, f"only the keys {', '.join(sorted(known))}", unknown)
    metric = value.get("objective_metric")
    if metric not in metrics:
        raise ConfigError(
            f"{key}.objective_metric",
            f"one of the metrics the container reports: {', '.join(metrics)}",
            metric,
            missing=metric is None,
        )
    direction = _choice(value.get("direction"), f"{key}.direction", TUNING_DIRECTIONS)
    strategy = _choice(value.get("strategy", "Bayesian"), f"{key}.strategy", TUNING_STRATEGIES)
    max_jobs = _int({f"{key}.max_jobs": value.get("max_jobs")}, f"{key}.max_jobs", 1, MAX_TUNING_JOBS)
    parallel = _int(
        {f"{key}.max_parallel_jobs": value.get("max_parallel_jobs", 1)},
        f"{key}.max_parallel_jobs",
        1,
        max_jobs,
        "at most max_jobs",
    )
    ranges = value.get("ranges")
    if not isinstance(ranges, dict) or not ranges:
        raise ConfigError(
            f"{key}.ranges",
            "an object of hyperparameter name -> range, at least one",
            ranges,
            missing=ranges is None,
        )
    parameter_ranges: dict[str, list[dict[str, Any]]] = {}
    for name, spec in ranges.items():
        list_name, one = _parameter_range(f"{key}.ranges.{name}", str(name), spec)
        parameter_ranges.setdefault(list_name, []).append(one)
    # The trials run in ceil(max_jobs / parallel) waves, each up to a trial's runtime (with spot: its wait).
    waves = -(-max_jobs // parallel)
    if waves * trial_seconds > MAX_ACTION_SECONDS:
        raise ConfigError(
            f"{key}.max_jobs",
            f"at most {MAX_ACTION_SECONDS // trial_seconds * parallel} trials at {parallel} in parallel: "
            f"{waves} waves of up to {trial_seconds} s must end within {ACTION_LIMIT_REASON}",
            max_jobs,
        )
    return TuningConfig(
        objective_metric=str(metric),
        objective_type=direction,
        strategy=strategy,
        max_jobs=max_jobs,
        max_parallel_jobs=parallel,
        parameter_ranges=parameter_ranges,
    )


def _log_retention(values: Mapping[str, Any]) -> int:
    days = _int(values, "log_retention_days", 1, 3653)
    if days not in VALID_RETENTION_DAYS:
        raise ConfigError(
            "log_retention_days", f"one of {', '.join(map(str, sorted(VALID_RETENTION_DAYS)))}", days
        )
    return days


# -- context layering ----------------------------------------------------------------------------------------
def read_json_context(path: Path) -> dict[str, Any]:
    """The "context" object of a cdk.json-style file ({} when the file does not exist)."""
    if not path.is_file():
        return {}
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(path.name, f"valid JSON ({error.msg} at line {error.lineno})", path.name) from None
    context = body.get("context", body) if isinstance(body, dict) else None
    if not isinstance(context, dict):
        raise ConfigError(path.name, 'a JSON object with a "context" object', type(body).__name__)
    return context


def layered_values(
    committed: Mapping[str, Any], local: Mapping[str, Any], effective: Mapping[str, Any]
) -> dict[str, Any]:
    """cdk.json < cdk.local.json < explicit overrides.

    The CDK CLI merges cdk.json and `-c` before the app sees them, and it does not know cdk.local.json.
    A key whose effective value differs from cdk.json's was therefore given explicitly (`-c` or the
    build_app argument) and wins; otherwise cdk.local.json's value, if any, wins over cdk.json's.
    """
    merged = {**committed, **local}
    for key, value in effective.items():
        if value is not None and (key not in committed or committed[key] != value):
            merged[key] = value
    return merged


# -- the deploy half -------------------------------------------------------------------------------------
STAGES = ("staging", "production")
GUARDRAIL_TYPES = ("canary", "linear")
API_AUTH = ("iam", "api_key")
# Serverless Inference: MemorySizeInMB 1024-6144 in 1 GB steps, MaxConcurrency 1-200 (API reference).
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_SERVERLESS_CONCURRENCY = 200
# Deployment guardrails (Developer Guide, "Blue/Green Deployments"): the canary at most half the fleet, a
# linear step 10-50% of it, a baking wait (WaitIntervalInSeconds) of at most an hour.
MAX_CANARY_PERCENT = 50
LINEAR_STEP_PERCENT = (10, 50)
MAX_WAIT_SECONDS = 3600
MAX_INSTANCES = 100


@dataclass(frozen=True)
class EndpointSpec:
    """One stage's endpoint: real-time instances with target-tracking autoscaling, or serverless."""

    instance_type: str | None = None
    instance_count: int = 1
    min_capacity: int = 1
    max_capacity: int = 1
    target_invocations_per_instance: int = 100  # SageMakerVariantInvocationsPerInstance per minute
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int | None = None

    @property
    def serverless(self) -> bool:
        return self.serverless_memory_mb is not None


@dataclass(frozen=True)
class GoldenTest:
    """The staging test: `rows` golden rows through the staging API, predictions within `tolerance`
    (absolute, or relative to the recorded value when that is larger) of the recorded ones, p99 under
    `p99_ms`."""

    rows: int
    p99_ms: float
    tolerance: float


@dataclass(frozen=True)
class Guardrail:
    """Production's blue/green traffic shifting: a canary of `size_percent`, or linear steps of that size,
    each baked for `wait_seconds`; the alarms roll back on any 5xx above `max_5xx` per minute or a p99
    ModelLatency above `p99_latency_ms`."""

    type: str
    size_percent: int
    wait_seconds: int
    max_5xx: int = 0
    p99_latency_ms: float = 1000.0


@dataclass(frozen=True)
class BatchTransform:
    input_prefix: str
    output_prefix: str
    instance_type: str
    instance_count: int = 1


@dataclass(frozen=True)
class DeployConfig:
    staging: EndpointSpec
    production: EndpointSpec
    data_capture: bool
    golden_test: GoldenTest
    production_manual_approval: bool
    guardrail: Guardrail
    api_auth: str
    throttle_rate: float
    throttle_burst: int
    batch_transform: BatchTransform | None

    def to_json(self) -> str:
        """The DEPLOY_CONFIG Lambda variable (README interface)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def _object(values: Mapping[str, Any], key: str, known: set[str], example: str) -> dict[str, Any]:
    raw = _maybe_json(values.get(key))
    if not isinstance(raw, dict):
        raise ConfigError(key, f"an object like {example}", raw, missing=raw is None)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(key, f"only the keys {', '.join(sorted(known))}", unknown[0])
    return raw


def _endpoint(values: Mapping[str, Any], stage: str) -> EndpointSpec:
    key = f"{stage}_endpoint"
    example = '{"instance_type": "ml.m5.large", "instance_count": 1, "min_capacity": 1, "max_capacity": 2}'
    raw = _object(
        values,
        key,
        {
            "instance_type",
            "instance_count",
            "min_capacity",
            "max_capacity",
            "target_invocations_per_instance",
            "serverless",
        },
        example + ' or {"serverless": {"memory_mb": 2048, "max_concurrency": 5}}',
    )
    if "serverless" in raw:
        if stage == "production":
            # Canary and linear shifting move traffic between instance fleets; serverless has none.
            raise ConfigError(
                f"{key}.serverless",
                "real-time instances in production (the guardrail shifts traffic between fleets)",
                raw["serverless"],
            )
        if set(raw) != {"serverless"}:
            raise ConfigError(key, "serverless alone, or the real-time keys", sorted(raw))
        serverless = raw["serverless"]
        if not isinstance(serverless, dict) or set(serverless) - {"memory_mb", "max_concurrency"}:
            raise ConfigError(
                f"{key}.serverless", 'an object like {"memory_mb": 2048, "max_concurrency": 5}', serverless
            )
        memory = (
            _int({"m": serverless.get("memory_mb")}, "m", 1024, 6144)
            if serverless.get("memory_mb") is not None
            else None
        )
        if memory not in SERVERLESS_MEMORY_MB:
            raise ConfigError(
                f"{key}.serverless.memory_mb",
                f"one of {', '.join(map(str, SERVERLESS_MEMORY_MB))}",
                serverless.get("memory_mb"),
            )
        concurrency = _int(
            {f"{key}.serverless.max_concurrency": serverless.get("max_concurrency")},
            f"{key}.serverless.max_concurrency",
            1,
            MAX_SERVERLESS_CONCURRENCY,
        )
        return EndpointSpec(serverless_memory_mb=memory, serverless_max_concurrency=concurrency)
    instance_type = _string(
        {f"{key}.instance_type": raw.get("instance_type")},
        f"{key}.instance_type",
        _INSTANCE_TYPE,
        "a SageMaker instance type like ml.m5.large",
    )
    count = _int(
        {f"{key}.instance_count": raw.get("instance_count", 1)}, f"{key}.instance_count", 1, MAX_INSTANCES
    )
    low = _int(
        {f"{key}.min_capacity": raw.get("min_capacity", count)},
        f"{key}.min_capacity",
        1,
        count,
        "at most instance_count",
    )
    high = _int(
        {f"{key}.max_capacity": raw.get("max_capacity", count)},
        f"{key}.max_capacity",
        count,
        MAX_INSTANCES,
        "at least instance_count",
    )
    target = _int(
        {f"{key}.target_invocations_per_instance": raw.get("target_invocations_per_instance", 100)},
        f"{key}.target_invocations_per_instance",
        1,
        100000,
    )
    return EndpointSpec(instance_type, count, low, high, target)


def _golden_test(values: Mapping[str, Any]) -> GoldenTest:
    key = "golden_test"
    raw = _object(
        values, key, {"rows", "p99_ms", "tolerance"}, '{"rows": 20, "p99_ms": 1000, "tolerance": 1e-4}'
    )
    return GoldenTest(
        rows=_int({f"{key}.rows": raw.get("rows", 20)}, f"{key}.rows", 1, 1000),
        p99_ms=_number(raw.get("p99_ms"), f"{key}.p99_ms", "milliseconds, more than 0", 0.001),
        tolerance=_number(raw.get("tolerance", 0.0), f"{key}.tolerance", "a number >= 0", 0.0),
    )


def _guardrail(values: Mapping[str, Any], production: EndpointSpec) -> Guardrail:
    key = "guardrail"
    raw = _object(
        values,
        key,
        {"type", "size_percent", "wait_seconds", "max_5xx", "p99_latency_ms"},
        '{"type": "canary", "size_percent": 50, "wait_seconds": 600}',
    )
    kind = _choice(raw.get("type"), f"{key}.type", GUARDRAIL_TYPES)
    low, high = (1, MAX_CANARY_PERCENT) if kind == "canary" else LINEAR_STEP_PERCENT
    size = _int(
        {f"{key}.size_percent": raw.get("size_percent")},
        f"{key}.size_percent",
        low,
        high,
        f"SageMaker's {kind} limits",
    )
    if production.instance_count * size < 100:
        # The canary (or step) is a share of the fleet, rounded to instances: below one instance there is none.
        raise ConfigError(
            f"{key}.size_percent",
            f"at least {-(-100 // production.instance_count)} with {production.instance_count} production instances (a canary of at least one instance)",
            size,
        )
    return Guardrail(
        type=kind,
        size_percent=size,
        wait_seconds=_int(
            {f"{key}.wait_seconds": raw.get("wait_seconds", 600)}, f"{key}.wait_seconds", 0, MAX_WAIT_SECONDS
        ),
        max_5xx=_int({f"{key}.max_5xx": raw.get("max_5xx", 0)}, f"{key}.max_5xx", 0, 1000000),
        p99_latency_ms=_number(
            raw.get("p99_latency_ms", 1000), f"{key}.p99_latency_ms", "milliseconds, more than 0", 0.001
        ),
    )


def _throttle(values: Mapping[str, Any]) -> tuple[float, int]:
    key = "api_throttle"
    raw = _object(values, key, {"rate_per_second", "burst"}, '{"rate_per_second": 50, "burst": 100}')
    rate = _number(
        raw.get("rate_per_second"), f"{key}.rate_per_second", "requests per second, more than 0", 0.001, 10000
    )
    burst = _int({f"{key}.burst": raw.get("burst")}, f"{key}.burst", 1, 5000)
    return rate, burst


def _batch_transform(values: Mapping[str, Any], data_prefix: str) -> BatchTransform | None:
    key = "batch_transform"
    if _is_off(_maybe_json(values.get(key))):
        return None
    raw = _object(
        values,
        key,
        {"input_prefix", "output_prefix", "instance_type", "instance_count"},
        '{"input_prefix": "batch/input/", "output_prefix": "batch/output/", "instance_type": "ml.m5.large"}',
    )
    expected = "an S3 key prefix ending with '/' and not starting with '/', like batch/input/"
    input_prefix = _string(
        {f"{key}.input_prefix": raw.get("input_prefix")}, f"{key}.input_prefix", _PREFIX, expected
    )
    output_prefix = _string(
        {f"{key}.output_prefix": raw.get("output_prefix")}, f"{key}.output_prefix", _PREFIX, expected
    )
    if input_prefix.startswith(output_prefix) or output_prefix.startswith(input_prefix):
        raise ConfigError(
            f"{key}.output_prefix", "a prefix that neither contains nor is inside input_prefix", output_prefix
        )
    if input_prefix.startswith(data_prefix):
        raise ConfigError(
            f"{key}.input_prefix",
            f"a prefix outside data_prefix ({data_prefix}): uploads there start training",
            input_prefix,
        )
    return BatchTransform(
        input_prefix=input_prefix,
        output_prefix=output_prefix,
        instance_type=_string(
            {f"{key}.instance_type": raw.get("instance_type")},
            f"{key}.instance_type",
            _INSTANCE_TYPE,
            "a SageMaker instance type like ml.m5.large",
        ),
        instance_count=_int(
            {f"{key}.instance_count": raw.get("instance_count", 1)}, f"{key}.instance_count", 1, MAX_INSTANCES
        ),
    )


def _deploy(values: Mapping[str, Any]) -> DeployConfig:
    production = _endpoint(values, "production")
    rate, burst = _throttle(values)
    return DeployConfig(
        staging=_endpoint(values, "staging"),
        production=production,
        data_capture=_bool(values, "data_capture"),
        golden_test=_golden_test(values),
        production_manual_approval=_bool(values, "production_manual_approval"),
        guardrail=_guardrail(values, production),
        api_auth=_choice(values.get("api_auth"), "api_auth", API_AUTH),
        throttle_rate=rate,
        throttle_burst=burst,
        batch_transform=_batch_transform(values, str(values.get("data_prefix"))),
    )
