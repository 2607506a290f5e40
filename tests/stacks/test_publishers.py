"""allow_service_to_publish on a bare stack: topic Allow from this account, and use of the topic's key."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from stacks.publishers import allow_service_to_publish
from tests.stacks.conftest import one_of

THIS_ACCOUNT = {"StringEquals": {"aws:SourceAccount": "222222222222"}}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = Stack(App(), "Probe", env={"account": "222222222222", "region": "eu-west-1"})
    key = kms.Key(stack, "Key")
    topic = sns.Topic(stack, "Topic", master_key=key, enforce_ssl=True)
    for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
        allow_service_to_publish(topic, key, service)
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def by_service(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        s["Principal"]["Service"]: s
        for s in statements
        if isinstance(s["Principal"], dict) and "Service" in s["Principal"]
    }


def test_each_service_may_publish_from_this_account_only_and_tls_is_still_enforced(
    template: dict[str, Any],
) -> None:
    statements = one_of(template, "AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]["Statement"]
    allowed = by_service(statements)
    assert set(allowed) == {"cloudwatch.amazonaws.com", "events.amazonaws.com"}
    for statement in allowed.values():
        assert (statement["Effect"], statement["Action"], statement["Condition"]) == (
            "Allow",
            "sns:Publish",
            THIS_ACCOUNT,
        )
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def test_each_service_may_use_the_key_with_the_conditions_its_kms_requests_carry(
    template: dict[str, Any],
) -> None:
    allowed = by_service(one_of(template, "AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"])
    for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
        assert sorted(allowed[service]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"], service
    assert allowed["cloudwatch.amazonaws.com"]["Condition"] == THIS_ACCOUNT
    # SNS docs: aws:SourceAccount in a key policy is not supported for EventBridge-to-encrypted topics.
    assert "Condition" not in allowed["events.amazonaws.com"]
