"""Source and Build stages on a bare stack: the connection permission CodePipeline really checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from stacks.config import PipelineConfig, read_json_context
from stacks.constructs.source_build import SourceAndBuild
from stacks.data_resources import DataResources
from tests.stacks.conftest import Synthesized, resources_of

ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "{prefix}:us-east-1:111111111111:connection/00000000-0000-4000-8000-000000000000"


def data_resources(stack: Stack) -> DataResources:
    """Stand-ins for TrainingData-<env>'s resources, in the same stack."""
    key = kms.Key(stack, "Key")
    return DataResources(
        key=key,
        data_bucket=s3.Bucket(stack, "DataBucket"),
        artifacts_bucket=s3.Bucket(stack, "ArtifactsBucket", encryption_key=key),
        audit_table=dynamodb.Table(
            stack,
            "AuditTable",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
        ),
        topic=sns.Topic(stack, "Topic"),
        repository=ecr.Repository(stack, "Images"),
        cache_repository=ecr.Repository(stack, "Cache"),
        model_package_group_arn="arn:aws:sagemaker:us-east-1:111111111111:model-package-group/probe",
    )


def synthesize(connection_arn: str) -> dict[str, Any]:
    config = PipelineConfig.from_mapping(
        {**read_json_context(ROOT / "cdk.json"), "connection_arn": connection_arn}
    )
    stack = Stack(App(), "Probe", env={"account": config.account, "region": config.region})
    data = data_resources(stack)
    stages = SourceAndBuild(stack, "SourceAndBuild", config=config, data=data)
    codepipeline.Pipeline(
        stack,
        "Pipeline",
        artifact_bucket=data.artifacts_bucket,
        stages=[
            codepipeline.StageProps(stage_name="Source", actions=[stages.source_action]),
            codepipeline.StageProps(stage_name="Build", actions=[stages.build_action]),
        ],
    )
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def role_statements(template: dict[str, Any], role_lid: str) -> list[dict[str, Any]]:
    return [
        s
        for p in resources_of(template, "AWS::IAM::Policy").values()
        if {"Ref": role_lid} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions_of(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def connection_users(template: dict[str, Any]) -> dict[str, set[str]]:
    """Role logical id -> the UseConnection actions it may call on the connection."""
    found: dict[str, set[str]] = {}
    for lid in resources_of(template, "AWS::IAM::Role"):
        for s in role_statements(template, lid):
            for action in actions_of(s):
                if action.endswith(":UseConnection"):
                    found.setdefault(lid, set()).add(f"{action} on {s['Resource']}")
    return found


def source_action_role(template: dict[str, Any]) -> str:
    (pipeline,) = resources_of(template, "AWS::CodePipeline::Pipeline").values()
    action = pipeline["Properties"]["Stages"][0]["Actions"][0]
    return action["RoleArn"]["Fn::GetAtt"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("prefix", ["codeconnections", "codestar-connections"])
def test_source_action_role_may_use_the_connection_with_its_arns_service_prefix(prefix: str) -> None:
    # IAM matches the action's service prefix against the resource's (AWS's connections rename docs):
    # a codeconnections ARN needs codeconnections:UseConnection, an older one codestar-connections:.
    arn = "arn:aws:" + CONNECTION.format(prefix=prefix)
    template = synthesize(arn)
    role = source_action_role(template)
    assert f"{prefix}:UseConnection on {arn}" in connection_users(template)[role]


def test_only_the_source_action_uses_the_connection(synthesized: Synthesized) -> None:
    # CodeBuild does not clone (the source output is a zip artifact), so it needs no connection permission.
    template = synthesized.pipeline_json
    (pipeline,) = resources_of(template, "AWS::CodePipeline::Pipeline").values()
    source = pipeline["Properties"]["Stages"][0]["Actions"][0]
    assert "OutputArtifactFormat" not in source["Configuration"]
    users = connection_users(template)
    arn = source["Configuration"]["ConnectionArn"]
    assert set(users) == {source_action_role(template)}
    assert f"codeconnections:UseConnection on {arn}" in users[source_action_role(template)]
