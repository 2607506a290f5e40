"""IAM enforced locally: each function calls AWS with its own role's credentials, as in Lambda.

- The harness (the local run, the tests) acts as an IAM user with full access, like the person deploying.
- Each Lambda's role is created in moto from the synthesized template, with the same actions, and
  assumed; the handler runs with those temporary credentials.
- moto then denies any action the role lacks, for every service it emulates, and the gateway does the
  same for the stand-ins. moto does not match resource ARNs (a statement on one table's ARN is denied for
  that table), so the local roles allow their actions on "*": resource scoping and conditions are
  checked statically on the templates (tests/stacks).

moto's enforcement is switched with its control API (`POST /moto-api/reset-auth`): off while the harness
user is created, on for everything after.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3

# Each LocalCloud is its own harness user (this prefix and a random suffix): two of them on one moto (the
# tests' session and an in-process local run share moto's backends) never replace each other's key.
HARNESS_USER_PREFIX = "mlpipe-local-harness-"
SESSION_SECONDS = 12 * 3600
USER_POLICY = "allowed"  # the inline policy of a local IAM user (the harness's allows "*")
# A person who decides on registered models: read and update the group's packages, read the audit trail.
APPROVER_ACTIONS = (
    "sagemaker:DescribeModelPackage",
    "sagemaker:ListModelPackages",
    "sagemaker:ListModelPackageGroups",
    "sagemaker:UpdateModelPackage",
    "dynamodb:ListTables",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:Query",
)
# Roles are created trusting any principal, so every harness user may assume them (playing the Lambda or
# SageMaker service here): moto matches a trust policy's principal exactly or "*", never the account root.
# The real trust policies are asserted on the templates.
LOCAL_TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
)

# moto names the action it checks after the request's SigV4 signing name, not the IAM prefix; where the two
# differ, a local role also gets the action under moto's name (tests/local/test_iam_enforcement.py).
MOTO_ACTION_PREFIXES = {"cloudwatch": "monitoring"}


def as_moto_checks_them(actions: list[str]) -> list[str]:
    """`actions`, plus each one under the name moto checks where that differs (cloudwatch:X → monitoring:X)."""
    checked = list(actions)
    for action in actions:
        prefix, _, name = action.partition(":")
        alias = MOTO_ACTION_PREFIXES.get(prefix.lower())
        if alias and f"{alias}:{name}" not in checked:
            checked.append(f"{alias}:{name}")
    return checked


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    arn: str = ""  # the identity's ARN as AWS reports it (a user's, or an assumed role session's)

    def environment(self) -> dict[str, str]:
        """The variables the Lambda runtime sets for the function's role."""
        variables = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        if self.session_token:
            variables["AWS_SESSION_TOKEN"] = self.session_token
        return variables

    def session(self, region: str) -> Any:
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=region,
        )


def set_enforcement(endpoint_url: str, enabled: bool) -> None:
    """moto checks every request's credentials and permissions from now on (or stops checking)."""
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth",
        data=b"0" if enabled else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},  # moto reads the count from the raw body
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def harness_credentials(endpoint_url: str, region: str) -> Credentials:
    """A new harness user with full access and an access key, with enforcement switched on.

    The user is this caller's alone (see HARNESS_USER_PREFIX); `retire_harness` removes it."""
    set_enforcement(endpoint_url, False)
    try:
        iam = _bootstrap_iam(endpoint_url, region)
        return user_credentials(iam, HARNESS_USER_PREFIX + secrets.token_hex(4), ["*"])
    finally:
        set_enforcement(endpoint_url, True)


def user_credentials(iam: Any, name: str, actions: list[str]) -> Credentials:
    """A named IAM user allowed `actions` (a person, e.g. an approver), with a fresh access key.

    Idempotent against a reused emulator: the user is kept, its older keys are replaced."""
    try:
        arn = iam.create_user(UserName=name)["User"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        arn = iam.get_user(UserName=name)["User"]["Arn"]
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    iam.put_user_policy(UserName=name, PolicyName=USER_POLICY, PolicyDocument=_policy(actions))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"], arn=arn)


def retire_harness(endpoint_url: str, region: str, harness: Credentials, enforce_after: bool) -> None:
    """Delete the harness user behind `harness` (its key, its policy, the user), so a reused emulator does
    not collect one user per run."""
    set_enforcement(endpoint_url, False)
    try:
        iam = _bootstrap_iam(endpoint_url, region)
        name = harness.arn.rsplit("/", 1)[-1]
        iam.delete_access_key(UserName=name, AccessKeyId=harness.access_key_id)
        iam.delete_user_policy(UserName=name, PolicyName=USER_POLICY)
        iam.delete_user(UserName=name)
    finally:
        set_enforcement(endpoint_url, enforce_after)


def _bootstrap_iam(endpoint_url: str, region: str) -> Any:
    """An IAM client for the moments enforcement is off (any credentials are accepted then)."""
    return boto3.session.Session(
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", region_name=region
    ).client("iam", endpoint_url=endpoint_url)


def _policy(actions: list[str]) -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    )


def assume(sts: Any, role_arn: str, session_name: str) -> Credentials:
    """Temporary credentials of a role the harness may assume (created by `LocalDeployment`)."""
    assumed = sts.assume_role(
        RoleArn=role_arn, RoleSessionName=session_name[:64], DurationSeconds=SESSION_SECONDS
    )
    credentials = assumed["Credentials"]
    return Credentials(
        credentials["AccessKeyId"],
        credentials["SecretAccessKey"],
        credentials["SessionToken"],
        arn=assumed["AssumedRoleUser"]["Arn"],  # arn:aws:sts::<account>:assumed-role/<role>/<session>
    )
