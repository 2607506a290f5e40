"""Which services deny a call that a role's policy does not allow, locally: the README's list of what the
local run enforces is this table, and a moto upgrade that changes it fails here first.

moto checks the action (never the resource or conditions) for the services below; the gateway checks the
stand-ins' (SageMaker, CodePipeline) the same way. Each row: a cheap call, and the action IAM requires for
it, as the templates name it (moto checks CloudWatch's as `monitoring:`, so local roles carry both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

UNRELATED_ACTION = "cloudtrail:LookupEvents"

# service -> (the action the call needs, the call); every service a project role uses is here.
ENFORCED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "s3": ("s3:ListAllMyBuckets", lambda client: client.list_buckets()),
    "dynamodb": ("dynamodb:ListTables", lambda client: client.list_tables()),
    "sns": ("sns:ListTopics", lambda client: client.list_topics()),
    "sqs": ("sqs:ListQueues", lambda client: client.list_queues()),
    "kms": ("kms:ListKeys", lambda client: client.list_keys()),
    "logs": ("logs:DescribeLogGroups", lambda client: client.describe_log_groups()),
    "cloudwatch": ("cloudwatch:DescribeAlarms", lambda client: client.describe_alarms()),
    "events": ("events:ListRules", lambda client: client.list_rules()),
    "ecr": ("ecr:DescribeRepositories", lambda client: client.describe_repositories()),
    "iam": ("iam:ListRoles", lambda client: client.list_roles()),
    "sagemaker": (
        "sagemaker:DescribeTrainingJob",
        lambda client: _not_found_is_allowed(lambda: client.describe_training_job(TrainingJobName="none")),
    ),
    "codepipeline": (
        "codepipeline:PutJobSuccessResult",
        lambda client: _not_found_is_allowed(lambda: client.put_job_success_result(jobId="none")),
    ),
}


def _not_found_is_allowed(call: Callable[[], Any]) -> None:
    """A call on something that does not exist got past IAM: the service answered about the resource."""
    try:
        call()
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in {"AccessDeniedException", "AccessDenied"}:
            raise
        return


def call_as(local_cloud: Any, actions: tuple[str, ...], service: str) -> None:
    """Make the row's call with the credentials of a role allowed exactly `actions` (IAM's names)."""
    session = local_cloud.role_credentials(local_cloud.ad_hoc_role(actions)).session(local_cloud.region)
    url = local_cloud.gateway.url if service in local_cloud.gateway.services else local_cloud.moto_url
    ENFORCED[service][1](session.client(service, endpoint_url=url))


@pytest.mark.parametrize("service", sorted(ENFORCED))
def test_a_role_without_the_action_is_denied_and_with_it_allowed(local_cloud: Any, service: str) -> None:
    action = ENFORCED[service][0]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        call_as(local_cloud, (UNRELATED_ACTION,), service)
    assert denied.value.response["Error"]["Code"] in {"AccessDenied", "AccessDeniedException"}
    call_as(local_cloud, (UNRELATED_ACTION, action), service)


def test_another_local_cloud_in_this_process_leaves_the_harness_working(local_cloud: Any) -> None:
    """An in-process local run (the e2e IAM tests) starts a second LocalCloud on the same moto backends;
    the session's harness key must survive it, and the second harness user is gone after it."""
    from mlpipe.local.cloud import LocalCloud

    with LocalCloud.running(local_cloud.region) as other:
        other.client("s3").list_buckets()
        local_cloud.client("s3").list_buckets()
    local_cloud.client("s3").list_buckets()
    users = [u["UserName"] for u in local_cloud.client("iam").list_users()["Users"]]
    assert other.harness.access_key_id not in {
        k["AccessKeyId"]
        for u in users
        for k in local_cloud.client("iam").list_access_keys(UserName=u)["AccessKeyMetadata"]
    }
