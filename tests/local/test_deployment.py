"""Emulator resources and Lambda environments come from the templates, intrinsic functions resolved."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from mlpipe.local.deployment import LocalDeployment, StackTemplate, TemplateError

DATA = StackTemplate(
    "DeployTestData-dev",
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
                "Export": {"Name": "DeployTestData-dev:ExportsOutputRefAuditTable"},
            },
            "ExportTopic": {"Value": {"Ref": "Topic99"}, "Export": {"Name": "DeployTestData-dev:Topic"}},
        },
    },
)

PIPELINE = StackTemplate(
    "DeployTestPipeline-dev",
    {
        "Resources": {
            "Queue1": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "RecordFn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Handler": "record_status.handler.lambda_handler",
                    "Role": {"Fn::GetAtt": ["Role7", "Arn"]},
                    "Environment": {
                        "Variables": {
                            "AUDIT_TABLE_NAME": {
                                "Fn::ImportValue": "DeployTestData-dev:ExportsOutputRefAuditTable"
                            },
                            "TOPIC_ARN": {"Fn::ImportValue": "DeployTestData-dev:Topic"},
                            "QUEUE": {"Fn::GetAtt": ["Queue1", "Arn"]},
                            "ROLE": {"Fn::GetAtt": ["Role7", "Arn"]},
                            "PREFIX": {"Fn::Join": ["-", ["mlpipe", {"Ref": "AWS::Region"}, ""]]},
                            "LITERAL": "datasets/",
                        }
                    },
                },
            },
            "Role7": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Role7Policy": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "Roles": [{"Ref": "Role7"}],
                    "PolicyDocument": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                                "Resource": "arn:x",
                            },
                            {
                                "Effect": "Allow",
                                "Action": "sns:Publish",
                                "Resource": "*",
                                "Condition": {"Bool": {}},
                            },
                            {"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
                        ]
                    },
                },
            },
        }
    },
)


@pytest.fixture
def deployment(local_cloud: Any) -> Any:
    """The small templates above, deployed into the session's local AWS (in another region)."""
    session = boto3.session.Session(
        aws_access_key_id=local_cloud.harness.access_key_id,
        aws_secret_access_key=local_cloud.harness.secret_access_key,
        region_name="eu-west-1",
    )
    deployment = LocalDeployment(DATA, PIPELINE, "eu-west-1")
    deployment.create(session, endpoint_url=local_cloud.moto_url)
    return deployment, ClientsOf(session, local_cloud.moto_url)


class ClientsOf:
    def __init__(self, session: Any, endpoint_url: str) -> None:
        self._session, self._endpoint_url = session, endpoint_url

    def client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self._endpoint_url)


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
    assert environment["TOPIC_ARN"] in [t["TopicArn"] for t in session.client("sns").list_topics()["Topics"]]
    assert environment["QUEUE"].startswith("arn:aws:sqs:eu-west-1:") and environment["QUEUE"].endswith(
        "queue1"
    )
    assert environment["ROLE"] == "arn:aws:iam::123456789012:role/deploytestpipeline-dev-role7"
    assert environment["PREFIX"] == "mlpipe-eu-west-1-"
    assert environment["LITERAL"] == "datasets/"


def test_deploying_again_into_the_same_emulator_reuses_resources(deployment: Any) -> None:
    local, session = deployment
    table = local.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref
    session.client("dynamodb").put_item(TableName=table, Item={"job_name": {"S": "kept"}})
    again = LocalDeployment(DATA, PIPELINE, "eu-west-1")
    again.create(session._session, endpoint_url=session._endpoint_url)
    assert again.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref == table
    assert session.client("dynamodb").get_item(TableName=table, Key={"job_name": {"S": "kept"}})["Item"]


def test_deploying_again_adds_an_index_the_template_gained(deployment: Any) -> None:
    """As a stack update does: a reused emulator's audit table gets the by-cache-key index of a newer template."""
    import copy

    _, session = deployment
    newer = copy.deepcopy(DATA.body)
    (table_props,) = [
        r["Properties"] for r in newer["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"
    ]
    table_props["AttributeDefinitions"].append({"AttributeName": "cache_key", "AttributeType": "S"})
    table_props["GlobalSecondaryIndexes"].append(
        {
            "IndexName": "by-cache-key",
            "KeySchema": [{"AttributeName": "cache_key", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }
    )
    again = LocalDeployment(StackTemplate(DATA.name, newer), PIPELINE, "eu-west-1")
    again.create(session._session, endpoint_url=session._endpoint_url)
    table = session.client("dynamodb").describe_table(
        TableName=again.resource(DATA, "AWS::DynamoDB::Table", "Audit").ref
    )["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["by-status", "by-cache-key"]


def test_roles_get_their_policies_actions_on_any_resource(deployment: Any) -> None:
    """moto enforces actions only (it cannot match resource ARNs): the local role allows the template's
    allowed actions on "*", without conditions; Deny statements are left to the static checks."""
    local, session = deployment
    function = local.function("record_status.handler.lambda_handler")
    assert local.role_actions(function.role_arn) == ("dynamodb:GetItem", "dynamodb:PutItem", "sns:Publish")
    document = session.client("iam").get_role_policy(
        RoleName="deploytestpipeline-dev-role7", PolicyName="Role7Policy"
    )
    (statement,) = document["PolicyDocument"]["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "sns:Publish"],
        "Resource": "*",
    }


def test_missing_pieces_are_clear_errors(deployment: Any, tmp_path: Any) -> None:
    local, _ = deployment
    with pytest.raises(TemplateError, match="no Lambda with handler nope"):
        local.function("nope")
    with pytest.raises(TemplateError, match="expected one AWS::SNS::Topic like 'missing'"):
        local.resource(DATA, "AWS::SNS::Topic", "missing")
    with pytest.raises(TemplateError, match="did `cdk synth` produce stack X"):
        StackTemplate.load(tmp_path, "X")
