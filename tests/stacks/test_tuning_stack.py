"""What `tuning` and the training cache change in the pipeline stack: start-training may create this
project's tuning jobs (only with tuning on), query the cache index and check a reused model; everything
scoped to the project's prefix. The tuning variant is synthesized once per session (tests/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import TUNING_ENV, Synthesized
from tests.stacks.test_pipeline_stack import as_list, function

PREFIX = f"mlpipe-{TUNING_ENV}-"
TUNING_JOBS = f"arn:aws:sagemaker:us-east-1:111111111111:hyper-parameter-tuning-job/{PREFIX}*"


def statements(template: dict[str, Any], role_hint: str) -> list[dict[str, Any]]:
    found = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        roles = [r.get("Ref", "") for r in resource["Properties"]["Roles"]]
        if any(role_hint in r for r in roles):
            found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_with_tuning_start_training_may_create_tag_watch_and_stop_this_projects_tuning_jobs(
    synthesized_tuning: Synthesized,
) -> None:
    tuning = [
        s
        for s in statements(synthesized_tuning.pipeline_json, "StartTrainingRole")
        if any("HyperParameterTuningJob" in a for a in as_list(s["Action"]))
    ]
    assert [(set(as_list(s["Action"])), s["Resource"]) for s in tuning] == [
        (
            {
                "sagemaker:CreateHyperParameterTuningJob",
                "sagemaker:AddTags",
                "sagemaker:DescribeHyperParameterTuningJob",
                "sagemaker:StopHyperParameterTuningJob",
            },
            TUNING_JOBS,
        )
    ]
    # The tuning job passes the same execution role, and only to SageMaker.
    (pass_role,) = [
        s
        for s in statements(synthesized_tuning.pipeline_json, "StartTrainingRole")
        if "iam:PassRole" in as_list(s["Action"])
    ]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_with_tuning_the_training_config_carries_sagemakers_ranges(synthesized_tuning: Synthesized) -> None:
    variables = function(synthesized_tuning, "start_training.handler.lambda_handler")["Environment"][
        "Variables"
    ]
    tuning = json.loads(variables["TRAINING_CONFIG"])["tuning"]
    assert tuning["objective_metric"] == "validation:rmse" and tuning["objective_type"] == "Minimize"
    assert tuning["parameter_ranges"]["IntegerParameterRanges"] == [
        {"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Auto"}
    ]
    assert variables["JOB_NAME_PREFIX"] == PREFIX and len(PREFIX) <= 20  # 12+ hex digits left of 32


def test_the_cache_lookup_is_one_index_and_the_reused_model_a_head(synthesized: Synthesized) -> None:
    found = {
        action: s
        for s in statements(synthesized.pipeline_json, "StartTrainingRole")
        for action in as_list(s["Action"])
    }
    query = found["dynamodb:Query"]
    (table, suffix) = query["Resource"]["Fn::Join"][1]
    assert "AuditTable" in table["Fn::ImportValue"] and suffix == "/index/by-cache-key"
    assert "dynamodb:Scan" not in found
    head = [
        s
        for s in statements(synthesized.pipeline_json, "StartTrainingRole")
        if "/models/*/output/model.tar.gz" in json.dumps(s["Resource"])
    ]
    assert [as_list(s["Action"]) for s in head] == [["s3:GetObject"]]
