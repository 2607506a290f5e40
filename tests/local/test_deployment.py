"""Emulator resources and Lambda environments come from the templates, intrinsic functions resolved."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlpipe.local.deployment import LocalDeployment, StackTemplate, TemplateError

DATA = StackTemplate(
    "TrainingData-dev",
    {
        "Resources": {
            "DataBucketE3889A50": {
                "Type": "AWS::S3::Bucket",
                "Properties": {"VersioningConfiguration": {"Status": "Enabled"}},
            },
            "AuditTable1234": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "KeySchema": [{"AttributeName": "job_name", "KeyType": "HASH"}],
                    "AttributeDefinitions": [
                        {"AttributeName": "job_name", "AttributeType": "S"},
                        {"AttributeName": "status", "AttributeType": "S"},
                    ],
                    "GlobalSecondaryIndexes": [
                        {
                            "IndexName": "by-status",
                            "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}],
                            "Projection": {"ProjectionType": "ALL"},
                        }
                    ],
                },
            },
            "Topic99": {"Type": "AWS::SNS::Topic", "Properties": {}},
            "Key55": {"Type": "AWS::KMS::Key", "Properties": {}},
        },
        "Outputs": {
            "ExportTable": {
                "Value": {"Ref": "AuditTable1234"},
                "Export": {"Name": "TrainingData-dev:ExportsOutputRefAuditTable"},
            },
            "ExportTopic": {"Value": {"Ref": "Topic99"}, "Export": {"Name": "TrainingData-dev:Topic"}},
        },
    },
)

PIPELINE = StackTemplate(
    "TrainingPipeline-dev",
    {
        "Resources": {
            "Queue1": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "RecordFn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Handler": "record_status.handler.lambda_handler",
                    "Environment": {
                        "Variables": {
                            "AUDIT_TABLE_NAME": {
                                "Fn::ImportValue": "TrainingData-dev:ExportsOutputRefAuditTable"
                            },
                            "TOPIC_ARN": {"Fn::ImportValue": "TrainingData-dev:Topic"},
                            "QUEUE": {"Fn::GetAtt": ["Queue1", "Arn"]},
                            "ROLE": {"Fn::GetAtt": ["Role7", "Arn"]},
                            "PREFIX": {"Fn::Join": ["-", ["mlpipe", {"Ref": "AWS::Region"}, ""]]},
                            "LITERAL": "datasets/",
                        }
                    },
                },
            },
            "Role7": {"Type": "AWS::IAM::Role", "Properties": {}},
        }
    },
)


@pytest.fixture
def deployment() -> Any:
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        deployment = LocalDeployment(DATA, PIPELINE, "eu-west-1")
        deployment.create(session, endpoint_url=None)
        yield deployment, session


def test_resources_follow_the_template(deployment: Any) -> None:
    local, session = deployment
    bucket = local.resource(DATA, "AWS::S3::Bucket", "DataBucket").ref
    assert session.client("s3").get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    table = session.client("dynamodb").describe_table(
        TableName=local.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref
    )
    assert table["Table"]["KeySchema"] == [{"AttributeName": "job_name", "KeyType": "HASH"}]
    assert [i["IndexName"] for i in table["Table"]["GlobalSecondaryIndexes"]] == ["by-status"]


def test_lambda_environment_is_resolved_to_local_names(deployment: Any) -> None:
    local, session = deployment
    environment = local.function("record_status.handler.lambda_handler").environment
    assert environment["AUDIT_TABLE_NAME"] == local.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref
    assert environment["TOPIC_ARN"] in session.client("sns").list_topics()["Topics"][0]["TopicArn"]
    assert environment["QUEUE"].startswith("arn:aws:sqs:eu-west-1:") and environment["QUEUE"].endswith(
        "queue1"
    )
    assert environment["ROLE"].startswith("arn:aws:iam:")  # not emulated: a stable stand-in ARN
    assert environment["PREFIX"] == "mlpipe-eu-west-1-"
    assert environment["LITERAL"] == "datasets/"


def test_deploying_again_into_the_same_emulator_reuses_resources(deployment: Any) -> None:
    local, session = deployment
    table = local.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref
    session.client("dynamodb").put_item(TableName=table, Item={"job_name": {"S": "kept"}})
    again = LocalDeployment(DATA, PIPELINE, "eu-west-1")
    again.create(session, endpoint_url=None)
    assert again.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref == table
    assert session.client("dynamodb").get_item(TableName=table, Key={"job_name": {"S": "kept"}})["Item"]


def test_missing_pieces_are_clear_errors(deployment: Any, tmp_path: Any) -> None:
    local, _ = deployment
    with pytest.raises(TemplateError, match="no Lambda with handler nope"):
        local.function("nope")
    with pytest.raises(TemplateError, match="expected one AWS::SNS::Topic like 'missing'"):
        local.resource(DATA, "AWS::SNS::Topic", "missing")
    with pytest.raises(TemplateError, match="did `cdk synth` produce stack X"):
        StackTemplate.load(tmp_path, "X")
