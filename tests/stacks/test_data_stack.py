"""TrainingData-<env>: the stateful resources and their security properties."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match, Template

from tests.audit_schema import AUDIT_TABLE_SCHEMA
from tests.stacks.conftest import Synthesized, one_of, resources_of


def test_kms_key_rotates_and_is_retained(data_template: Template) -> None:
    data_template.resource_count_is("AWS::KMS::Key", 1)
    data_template.has_resource(
        "AWS::KMS::Key",
        {
            "Properties": {"EnableKeyRotation": True},
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_key_policy_lets_alarms_and_eventbridge_use_the_key(synthesized: Synthesized) -> None:
    key = one_of(synthesized.data_json, "AWS::KMS::Key")
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    services = {
        service
        for s in statements
        for service in _as_list(s.get("Principal", {}).get("Service", []))
        if "kms:GenerateDataKey" in _as_list(s["Action"]) and s.get("Condition")
    }
    assert {"cloudwatch.amazonaws.com", "events.amazonaws.com"} <= services


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _tls_only_policy(synthesized: Synthesized, bucket_lid: str) -> bool:
    for policy in resources_of(synthesized.data_json, "AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] != {"Ref": bucket_lid}:
            continue
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                return True
    return False


def test_all_buckets_are_private_tls_only_versioned_with_noncurrent_lifecycle(
    synthesized: Synthesized,
) -> None:
    buckets = resources_of(synthesized.data_json, "AWS::S3::Bucket")
    assert len(buckets) == 3
    for lid, bucket in buckets.items():
        props = bucket["Properties"]
        assert bucket["DeletionPolicy"] == "Retain", lid
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, lid
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, lid
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") for r in rules), lid
        assert _tls_only_policy(synthesized, lid), lid


def test_data_and_artifact_buckets_use_the_kms_key_and_log_access(synthesized: Synthesized) -> None:
    for hint in ("DataBucket", "ArtifactsBucket"):
        props = one_of(synthesized.data_json, "AWS::S3::Bucket", hint)["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {
            "Fn::GetAtt": [_key_lid(synthesized), "Arn"]
        }
        assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("AccessLogBucket")


def test_access_log_bucket_uses_s3_managed_encryption(synthesized: Synthesized) -> None:
    # Server access logging cannot deliver to SSE-KMS buckets; see stacks/data_stack.py.
    props = one_of(synthesized.data_json, "AWS::S3::Bucket", "AccessLogBucket")["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_data_bucket_sends_events_to_eventbridge(synthesized: Synthesized) -> None:
    props = one_of(synthesized.data_json, "AWS::S3::Bucket", "DataBucket")["Properties"]
    assert props["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    # Native property, no notifications custom resource (and its Lambda).
    assert not resources_of(synthesized.data_json, "Custom::S3BucketNotifications")


def _key_lid(synthesized: Synthesized) -> str:
    (lid,) = resources_of(synthesized.data_json, "AWS::KMS::Key")
    return lid


def test_audit_table_keys_indexes_and_protection(data_template: Template, synthesized: Synthesized) -> None:
    data_template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "KeySchema": [{"AttributeName": "job_name", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
                "DeletionProtectionEnabled": True,
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {
                    "SSEEnabled": True,
                    "SSEType": "KMS",
                    "KMSMasterKeyId": {"Fn::GetAtt": [_key_lid(synthesized), "Arn"]},
                },
                # Exactly the indexes the Lambda and `runs` tests create their tables with.
                "GlobalSecondaryIndexes": AUDIT_TABLE_SCHEMA["GlobalSecondaryIndexes"],
            },
        },
    )
    attributes = one_of(synthesized.data_json, "AWS::DynamoDB::Table", "AuditTable")["Properties"][
        "AttributeDefinitions"
    ]
    assert sorted(attributes, key=str) == sorted(AUDIT_TABLE_SCHEMA["AttributeDefinitions"], key=str)


def test_topic_is_kms_encrypted_tls_only_with_email_subscription(
    data_template: Template, synthesized: Synthesized
) -> None:
    data_template.has_resource(
        "AWS::SNS::Topic",
        {
            "DeletionPolicy": "Retain",
            "Properties": {"KmsMasterKeyId": {"Fn::GetAtt": [_key_lid(synthesized), "Arn"]}},
        },
    )
    data_template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ml-team@example.com"}
    )
    data_template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_ecr_repository_scans_is_immutable_and_keeps_last_images(data_template: Template) -> None:
    data_template.resource_count_is("AWS::ECR::Repository", 2)  # images, and the build cache
    data_template.has_resource(
        "AWS::ECR::Repository",
        {
            "DeletionPolicy": "Retain",
            "Properties": {
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "ImageTagMutability": "IMMUTABLE",
                "EncryptionConfiguration": {"EncryptionType": "KMS", "KmsKey": Match.any_value()},
                "LifecyclePolicy": {
                    "LifecyclePolicyText": Match.serialized_json(
                        {
                            "rules": [
                                Match.object_like(
                                    {
                                        "selection": {
                                            "tagStatus": "any",
                                            "countType": "imageCountMoreThan",
                                            "countNumber": 20,
                                        },
                                        "action": {"type": "expire"},
                                    }
                                )
                            ]
                        }
                    )
                },
            },
        },
    )


def test_cloudwatch_alarms_may_publish_to_the_encrypted_topic_from_this_account(
    synthesized: Synthesized,
) -> None:
    # enforce_ssl creates a topic policy, which replaces SNS's default one: without its own Allow,
    # CloudWatch cannot publish the DLQ alarms. It also needs the topic's key.
    (topic_lid,) = resources_of(synthesized.data_json, "AWS::SNS::Topic")
    this_account = {"StringEquals": {"aws:SourceAccount": "111111111111"}}
    publish = [
        s
        for p in resources_of(synthesized.data_json, "AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_lid} in p["Properties"]["Topics"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and "sns:Publish" in _as_list(s["Action"])
    ]
    assert [{k: v for k, v in s.items() if k != "Sid"} for s in publish] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": {"Ref": topic_lid},
            "Condition": this_account,
        }
    ]
    key_statements = one_of(synthesized.data_json, "AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    assert any(
        "cloudwatch.amazonaws.com" in _as_list(s["Principal"].get("Service", []))
        and {"kms:Decrypt", "kms:GenerateDataKey"} <= set(_as_list(s["Action"]))
        and s.get("Condition") == this_account
        for s in key_statements
    )
    # Every alarm of the pipeline notifies this topic and nothing else.
    for alarm in resources_of(synthesized.pipeline_json, "AWS::CloudWatch::Alarm").values():
        assert ["NotificationTopic" in a["Fn::ImportValue"] for a in alarm["Properties"]["AlarmActions"]] == [
            True
        ]


def test_key_policy_lets_cloudwatch_logs_use_the_key_for_this_accounts_log_groups(
    synthesized: Synthesized,
) -> None:
    # AWS's documented key policy for encrypting log data with a KMS key (CloudWatch Logs user guide).
    statements = one_of(synthesized.data_json, "AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    logs = [s for s in statements if s["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}]
    assert [{k: v for k, v in s.items() if k != "Sid"} for s in logs] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
            "Action": [
                "kms:Decrypt*",
                "kms:Describe*",
                "kms:Encrypt*",
                "kms:GenerateDataKey*",
                "kms:ReEncrypt*",
            ],
            "Resource": "*",
            "Condition": {
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:111111111111:log-group:*"
                }
            },
        }
    ]


def test_model_package_group_is_one_per_project_and_env_and_retained(synthesized: Synthesized) -> None:
    """Packages (every registered model and its approval) must outlive a pipeline redeploy."""
    groups = resources_of(synthesized.data_json, "AWS::SageMaker::ModelPackageGroup")
    assert not resources_of(synthesized.pipeline_json, "AWS::SageMaker::ModelPackageGroup")
    ((_, group),) = groups.items()
    assert group["Properties"]["ModelPackageGroupName"] == "mlpipe-dev"
    assert group["DeletionPolicy"] == group["UpdateReplacePolicy"] == "Retain"
