"""The typed config: defaults, `-c` string forms, precedence, and one clear line per error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stacks.config import ConfigError, PipelineConfig, layered_values, read_json_context

ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = read_json_context(ROOT / "cdk.json")


def config(**overrides: Any) -> PipelineConfig:
    raw = {**CDK_JSON, **overrides}
    for key in [k for k, v in overrides.items() if v is _MISSING]:
        del raw[key]
    return PipelineConfig.from_mapping(raw)


_MISSING = object()
GATE = {"metric": "validation:rmse", "direction": "minimize", "max_regression": 0.02, "floor": 0.5}


def test_repo_cdk_json_is_a_complete_valid_example() -> None:
    cfg = config()
    assert cfg.env_name == "dev"
    assert cfg.account == "111111111111"
    assert cfg.job_name_prefix == "mlpipe-dev-"
    assert cfg.pipeline_name == "mlpipe-dev"
    assert (cfg.data_stack_name, cfg.pipeline_stack_name) == ("TrainingData-dev", "TrainingPipeline-dev")
    assert cfg.notification_emails == ("ml-team@example.com",)
    assert cfg.training.instance_type == "ml.m5.large"
    assert cfg.training.max_wait_seconds is None  # spot off


def test_cli_string_forms_are_parsed() -> None:
    cfg = config(
        training_instance_count="2",
        training_use_spot="true",
        training_max_wait_seconds="7200",
        notification_emails="a@example.com, b@example.org",
        hyperparameters='{"eta": "0.1"}',
        log_retention_days="14",
    )
    assert cfg.training.instance_count == 2
    assert cfg.training.data_distribution == "FullyReplicated"  # the default
    assert config(training_data_distribution="shardedbys3key").training.data_distribution == "ShardedByS3Key"
    assert cfg.training.use_spot is True
    assert cfg.training.max_wait_seconds == 7200
    assert cfg.notification_emails == ("a@example.com", "b@example.org")
    assert cfg.training.hyperparameters == {"eta": "0.1"}
    assert json.loads(cfg.training.to_json())["max_wait_seconds"] == 7200


TUNING = {
    "objective_metric": "validation:rmse",
    "direction": "minimize",
    "strategy": "random",
    "max_jobs": 6,
    "max_parallel_jobs": 2,
    "ranges": {
        "max_depth": {"type": "integer", "min": 3, "max": 8},
        "eta": {"type": "continuous", "min": 0.05, "max": 0.5, "scaling": "logarithmic"},
        "grow_policy": {"type": "categorical", "values": ["depthwise", "lossguide"]},
    },
}


def test_tuning_becomes_sagemakers_parameter_ranges_in_the_training_config() -> None:
    assert config().training.tuning is None  # off by default
    tuning = config(tuning=TUNING).training.tuning
    assert tuning is not None
    assert (tuning.objective_metric, tuning.objective_type, tuning.strategy) == (
        "validation:rmse",
        "Minimize",
        "Random",
    )
    assert (tuning.max_jobs, tuning.max_parallel_jobs) == (6, 2)
    assert tuning.parameter_ranges == {
        "IntegerParameterRanges": [
            {"Name": "max_depth", "MinValue": "3", "MaxValue": "8", "ScalingType": "Auto"}
        ],
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
        ],
        "CategoricalParameterRanges": [{"Name": "grow_policy", "Values": ["depthwise", "lossguide"]}],
    }
    assert tuning.max_runtime_seconds == 23 * 3600  # the tuning job ends before the Train action would
    # -c gives a JSON string; "none" turns it off again.
    assert config(tuning=json.dumps(TUNING)).training.tuning == tuning
    assert config(tuning="none").training.tuning is None
    assert json.loads(config(tuning=TUNING).training.to_json())["tuning"]["strategy"] == "Random"


def test_cache_and_warm_pool_defaults_and_forms() -> None:
    assert (config().training.cache, config().training.keep_alive_seconds) == (True, 0)
    assert config(training_cache="false").training.cache is False
    assert config(training_keep_alive_seconds="1800").training.keep_alive_seconds == 1800


def test_compliance_packs_accept_a_list_or_a_comma_string_and_default_to_none() -> None:
    assert config().compliance_packs == ()
    assert config(compliance_packs=["hipaa"]).compliance_packs == ("hipaa",)
    assert config(compliance_packs="nist-800-53-r5, pci-dss-3.2.1").compliance_packs == (
        "nist-800-53-r5",
        "pci-dss-3.2.1",
    )
    assert config(compliance_packs='["hipaa", "hipaa"]').compliance_packs == ("hipaa",)


def test_registry_keys_parse_their_string_forms_and_default() -> None:
    cfg = config(
        quality_gate='{"metric": "validation:r2", "direction": "maximize", "max_regression": "0.05"}',
        auto_approve="true",
        inference_instance_types="ml.c5.xlarge, ml.m5.large",
    )
    gate = cfg.registry.quality_gate
    assert (gate.metric, gate.direction, gate.max_regression, gate.floor) == (
        "validation:r2",
        "maximize",
        0.05,
        None,
    )
    assert cfg.registry.auto_approve is True
    assert cfg.registry.inference_instance_types == ("ml.c5.xlarge", "ml.m5.large")
    defaults = config(
        quality_gate=_MISSING, auto_approve=_MISSING, inference_instance_types=_MISSING
    ).registry
    assert defaults.quality_gate.metric == "validation:rmse" and defaults.quality_gate.floor is None
    assert defaults.auto_approve is False and defaults.inference_instance_types == ("ml.m5.large",)
    assert config().model_package_group_name == "mlpipe-dev"


def test_the_gate_metric_check_reads_the_jobs_metric_definitions() -> None:
    from pipeline_common.metrics import metric_definitions

    cfg = config()
    names = cfg.training.metric_names
    assert cfg.training.metric_definition_names == tuple(d["Name"] for d in metric_definitions(names))
    assert cfg.registry.quality_gate.metric in cfg.training.metric_definition_names


def test_metric_names_come_from_the_configured_models_manifest() -> None:
    """One source: the model's model.json, read at synth, into TRAINING_CONFIG (start-training's
    MetricDefinitions), the quality gate check and the tuning objective check."""
    default = config(model_dir=_MISSING)
    manifest = json.loads((ROOT / "container/user_model/model.json").read_text())["metrics"]
    assert default.model_dir == "container/user_model"
    assert default.training.metric_names == tuple(manifest)
    assert json.loads(default.training.to_json())["metric_names"] == manifest
    assert "test:rmse" in default.training.metric_definition_names
    example = config(model_dir="examples/linear_model", tuning=TUNING)
    assert example.model_dir == "examples/linear_model"
    example_manifest = json.loads((ROOT / "examples/linear_model/model.json").read_text())["metrics"]
    assert example.training.metric_names == tuple(example_manifest)
    assert config(model_dir="./examples/linear_model/").model_dir == "examples/linear_model"


def test_defaults_apply_to_optional_keys() -> None:
    cfg = config(project_name=_MISSING, data_prefix=_MISSING, github_branch=_MISSING)
    assert (cfg.project_name, cfg.data_prefix, cfg.github_branch) == ("mlpipe", "datasets/", "main")


def test_precedence_cdk_json_then_local_file_then_explicit() -> None:
    committed = {"env_name": "dev", "region": "us-east-1", "account": "111111111111"}
    local = {"env_name": "staging", "account": "222222222222"}
    # The CLI hands the app cdk.json values merged with -c: env_name unchanged, account given with -c.
    effective = {"env_name": "dev", "region": "us-east-1", "account": "333333333333"}
    merged = layered_values(committed, local, effective)
    assert merged == {"env_name": "staging", "region": "us-east-1", "account": "333333333333"}


def test_local_file_is_read_from_context_key(tmp_path: Path) -> None:
    (tmp_path / "cdk.local.json").write_text('{"context": {"env_name": "prod"}}')
    assert read_json_context(tmp_path / "cdk.local.json") == {"env_name": "prod"}
    assert read_json_context(tmp_path / "absent.json") == {}
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match=r"^broken\.json: expected valid JSON"):
        read_json_context(tmp_path / "broken.json")


BAD = [
    # (overrides, key named first in the message, words the message must contain)
    ({"env_name": _MISSING}, "env_name", "missing"),
    ({"connection_arn": _MISSING}, "connection_arn", "missing"),
    ({"account": "12345"}, "account", "12-digit"),
    ({"region": "useast1"}, "region", "AWS region"),
    ({"env_name": "Prod_1"}, "env_name", "lower-case"),
    ({"env_name": "a-very-long-environment-name"}, "env_name", "at most 25 characters"),
    ({"connection_arn": "arn:aws:codestar:us-east-1:111111111111:connection/x"}, "connection_arn", "<uuid>"),
    ({"connection_arn": "ghp_token"}, "connection_arn", "arn:aws:codeconnections"),
    ({"powertools_layer_arn": "layer"}, "powertools_layer_arn", "arn:aws:lambda"),
    (
        {
            "powertools_layer_arn": "arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:27"
        },
        "powertools_layer_arn",
        "region us-east-1",
    ),
    ({"notification_emails": []}, "notification_emails", "missing"),
    ({"notification_emails": ["not-an-email"]}, "notification_emails", "valid email"),
    ({"notification_emails": "ml-team@example"}, "notification_emails", "valid email"),
    ({"data_prefix": "/datasets/"}, "data_prefix", "ending with '/'"),
    ({"data_prefix": "datasets"}, "data_prefix", "ending with '/'"),
    ({"model_prefix": "models"}, "model_prefix", "ending with '/'"),
    ({"checkpoint_prefix": "models/"}, "checkpoint_prefix", "different from model_prefix"),
    ({"training_instance_type": "m5.large"}, "training_instance_type", "ml.m5.large"),
    ({"training_instance_count": 0}, "training_instance_count", "integer from 1"),
    ({"training_instance_count": "two"}, "training_instance_count", "integer from 1"),
    (
        {"training_data_distribution": "Sharded"},
        "training_data_distribution",
        "FullyReplicated, ShardedByS3Key",
    ),
    ({"training_volume_size_gb": -5}, "training_volume_size_gb", "integer from 1"),
    ({"training_max_runtime_seconds": 500_000}, "training_max_runtime_seconds", "82800"),
    # CodePipeline fails a Lambda invoke action after 24 h: a job the action waits for must end before.
    ({"training_max_runtime_seconds": 86_400}, "training_max_runtime_seconds", "24 h after it starts"),
    (
        {"training_use_spot": True, "training_max_wait_seconds": 86_400},
        "training_max_wait_seconds",
        "from 1 to 82800 (23 h: CodePipeline fails the Train action 24 h after it starts)",
    ),
    ({"training_use_spot": "yes"}, "training_use_spot", "true or false"),
    (
        {"training_use_spot": True, "training_max_wait_seconds": 60},
        "training_max_wait_seconds",
        ">= training_max_runtime_seconds (3600)",
    ),
    (
        {"training_use_spot": True, "training_max_wait_seconds": _MISSING},
        "training_max_wait_seconds",
        "missing",
    ),
    ({"hyperparameters": {"eta": 0.2}}, "hyperparameters.eta", "string values"),
    ({"hyperparameters": ["eta"]}, "hyperparameters", "object"),
    ({"ecr_keep_images": 0}, "ecr_keep_images", "integer from 1"),
    ({"log_retention_days": 10}, "log_retention_days", "one of 1, 3, 5"),
    ({"github_owner": "bad owner"}, "github_owner", "GitHub"),
    ({"github_branch": "feature//x"}, "github_branch", "branch"),
    ({"compliance_packs": "nist"}, "compliance_packs", "nist-800-53-r5, hipaa, pci-dss-3.2.1"),
    ({"compliance_packs": ["hipaa", "sox"]}, "compliance_packs", "(got 'sox')"),
    ({"compliance_packs": {"hipaa": True}}, "compliance_packs", "comma-separated"),
    # The gate's metric must be one every job reports (its MetricDefinitions): checked at synth.
    ({"quality_gate": {**GATE, "metric": "validation:f1"}}, "quality_gate.metric", "validation:rmse"),
    ({"quality_gate": {**GATE, "direction": "down"}}, "quality_gate.direction", "minimize or maximize"),
    ({"quality_gate": {**GATE, "max_regression": 2}}, "quality_gate.max_regression", "fraction from 0 to 1"),
    ({"quality_gate": {**GATE, "max_regression": "lots"}}, "quality_gate.max_regression", "2% worse"),
    ({"quality_gate": {**GATE, "floor": "low"}}, "quality_gate.floor", "a number, or null"),
    ({"quality_gate": {**GATE, "threshold": 1}}, "quality_gate", "only the keys"),
    ({"quality_gate": "validation:rmse"}, "quality_gate", "an object like"),
    ({"auto_approve": "sometimes"}, "auto_approve", "true or false"),
    ({"inference_instance_types": []}, "inference_instance_types", "missing"),
    ({"inference_instance_types": ["m5.large"]}, "inference_instance_types", "ml.m5.large"),
    ({"training_cache": "sometimes"}, "training_cache", "true or false"),
    ({"training_keep_alive_seconds": 3601}, "training_keep_alive_seconds", "from 0 to 3600"),
    (
        {"training_keep_alive_seconds": 600, "training_use_spot": True},
        "training_keep_alive_seconds",
        "warm pools cannot be used with spot",
    ),
    ({"training_keep_alive_seconds": 600, "tuning": TUNING}, "training_keep_alive_seconds", "0 with tuning"),
    ({"tuning": ["validation:rmse"]}, "tuning", "an object with"),
    ({"tuning": {**TUNING, "budget": 5}}, "tuning", "only the keys"),
    (
        {"tuning": {**TUNING, "objective_metric": "validation:f1"}},
        "tuning.objective_metric",
        "validation:rmse",
    ),
    ({"tuning": {**TUNING, "direction": "down"}}, "tuning.direction", "Minimize, Maximize"),
    ({"tuning": {**TUNING, "strategy": "Grid"}}, "tuning.strategy", "Bayesian, Random"),
    ({"tuning": {**TUNING, "max_jobs": 0}}, "tuning.max_jobs", "from 1 to 100"),
    ({"tuning": {**TUNING, "max_parallel_jobs": 7}}, "tuning.max_parallel_jobs", "from 1 to 6"),
    ({"tuning": {**TUNING, "ranges": {}}}, "tuning.ranges", "at least one"),
    ({"tuning": {**TUNING, "ranges": {"max_depth": [3, 8]}}}, "tuning.ranges.max_depth", '"type": "integer"'),
    (
        {"tuning": {**TUNING, "ranges": {"max_depth": {"type": "integer", "min": 3.5, "max": 8}}}},
        "tuning.ranges.max_depth.min",
        "an integer",
    ),
    (
        {"tuning": {**TUNING, "ranges": {"eta": {"type": "continuous", "min": 0.5, "max": 0.1}}}},
        "tuning.ranges.eta.max",
        "greater than min (0.5)",
    ),
    (
        {
            "tuning": {
                **TUNING,
                "ranges": {"eta": {"type": "continuous", "min": 0, "max": 1, "scaling": "log"}},
            }
        },
        "tuning.ranges.eta.scaling",
        "Auto, Linear, Logarithmic, ReverseLogarithmic",
    ),
    (
        {
            "tuning": {
                **TUNING,
                "ranges": {"eta": {"type": "continuous", "min": 0, "max": 1, "scaling": "Logarithmic"}},
            }
        },
        "tuning.ranges.eta.min",
        "> 0 with Logarithmic",
    ),
    (
        {"tuning": {**TUNING, "ranges": {"booster": {"type": "categorical", "values": []}}}},
        "tuning.ranges.booster.values",
        "1 to 30 different",
    ),
    # 100 trials, 2 at a time, 1 h each: 50 h, but CodePipeline fails the Train action after 24 h.
    ({"tuning": {**TUNING, "max_jobs": 100}}, "tuning.max_jobs", "at most 46 trials at 2 in parallel"),
    ({"model_dir": "/opt/model"}, "model_dir", "relative to its root"),
    ({"model_dir": "../elsewhere"}, "model_dir", "inside the repository"),
    (
        {"model_dir": "examples/no_such_model"},
        "model_dir",
        "model.json manifest (none in examples/no_such_model)",
    ),
    ({"model_dir": "container"}, "model_dir", "model.json"),
    ({"model_dir": 3}, "model_dir", "a model folder inside the repository"),
    (
        {"model_dir": "examples/linear_model", "quality_gate": {**GATE, "metric": "test:f1"}},
        "quality_gate.metric",
        "test:rmse",
    ),
    # Tuning job names are at most 32 characters: the prefix must leave room for 12 hex digits.
    ({"tuning": TUNING, "env_name": "staging-eu-west"}, "env_name", "at most 18 characters with tuning"),
]


@pytest.mark.parametrize(("overrides", "key", "words"), BAD, ids=[f"{b[1]}:{i}" for i, b in enumerate(BAD)])
def test_each_bad_value_is_one_line_naming_the_key(overrides: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(**overrides)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: expected ")
    assert words in message


def test_build_app_merges_the_local_file_under_explicit_overrides(tmp_path: Path) -> None:
    from stacks.application import build_app

    (tmp_path / "cdk.json").write_text((ROOT / "cdk.json").read_text())
    (tmp_path / "cdk.local.json").write_text(
        json.dumps({"context": {"env_name": "staging", "github_owner": "real-org"}})
    )
    app = build_app({"github_owner": "cli-org"}, outdir=str(tmp_path / "out"), project_root=tmp_path)
    stacks = {child.node.id: child for child in app.node.children}
    assert {"TrainingData-staging", "TrainingPipeline-staging"} <= set(stacks)
    assert stacks["TrainingPipeline-staging"].config.github_owner == "cli-org"  # type: ignore[attr-defined]


def _model_folder(root: Path, metrics: Any) -> str:
    folder = root / "models" / "m"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"name": "m", "metrics": metrics}))
    return "models/m"


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        ([f"m{i}" for i in range(14)], "at most 13 metric names in model.json"),
        (["rmse", "rmse"], "without repeats"),
        (["val rmse"], "without spaces, ':' or '='"),
        (["a=b"], "without spaces, ':' or '='"),
        ([], 'needs "metrics"'),
    ],
)
def test_a_models_manifest_that_sagemaker_cannot_take_fails_synth_with_a_sentence(
    tmp_path: Path, metrics: Any, words: str
) -> None:
    from stacks.model import ModelDirError, metric_names

    with pytest.raises(ModelDirError) as error:
        metric_names(_model_folder(tmp_path, metrics), root=tmp_path)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_thirteen_metric_names_are_the_most_sagemaker_takes(tmp_path: Path) -> None:
    from pipeline_common.metrics import MAX_METRIC_DEFINITIONS, metric_definitions

    from stacks.model import metric_names

    names = metric_names(_model_folder(tmp_path, [f"m{i}" for i in range(13)]), root=tmp_path)
    assert len(metric_definitions(names)) == 39 <= MAX_METRIC_DEFINITIONS
