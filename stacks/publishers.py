"""Let an AWS service publish to the project's KMS-encrypted, TLS-only topic.

Any `AWS::SNS::TopicPolicy` (CDK's `enforce_ssl` creates one) replaces SNS's default policy, so a
service that publishes (CloudWatch alarms today, EventBridge rules later) needs its own Allow on the
topic, and, because the topic is encrypted, its own use of the key. One helper, so each new publisher
is one call and gets the same scoping.
"""

from __future__ import annotations

import re

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns

# The SNS developer guide (Key management, "compatibility between event sources from AWS services and
# encrypted topics") says aws:SourceAccount/aws:SourceArn in a KMS key policy are not supported for
# EventBridge-to-encrypted-topic delivery: its key statement must go without them (the topic policy keeps
# them). CloudWatch alarms support them on both.
KEY_CONDITIONS_UNSUPPORTED = frozenset({"events.amazonaws.com"})


def allow_service_to_publish(topic: sns.Topic, key: kms.Key, service: str) -> None:
    """Allow `service` (e.g. cloudwatch.amazonaws.com) to publish to `topic`, from this account only."""
    this_account = {"StringEquals": {"aws:SourceAccount": Stack.of(topic).account}}
    name = "".join(
        part.capitalize() for part in re.split(r"[^a-z0-9]+", service.removesuffix(".amazonaws.com"))
    )
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            sid=f"Allow{name}ToPublish",
            principals=[iam.ServicePrincipal(service)],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions=this_account,
        )
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid=f"Allow{name}ToPublishToEncryptedTopic",
            principals=[iam.ServicePrincipal(service)],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],  # in a key policy "*" means this key
            conditions=None if service in KEY_CONDITIONS_UNSUPPORTED else this_account,
        )
    )
