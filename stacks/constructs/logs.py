"""Every CloudWatch log group the stacks create comes from here: one retention rule, one encryption key.

The key's policy must let CloudWatch Logs use it (stacks/data_stack.py, AWS's documented statement).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import VALID_RETENTION_DAYS

# RetentionDays members are declared in ascending order of days (INFINITE last).
RETENTION = dict(zip(sorted(VALID_RETENTION_DAYS), list(logs.RetentionDays)[:-1], strict=True))


def log_group(scope: Construct, construct_id: str, *, retention_days: int, key: kms.IKey) -> logs.LogGroup:
    """A KMS-encrypted log group owned by the pipeline stack: destroyed with it (logs are not the audit trail)."""
    return logs.LogGroup(
        scope,
        construct_id,
        retention=RETENTION[retention_days],
        encryption_key=key,
        removal_policy=RemovalPolicy.DESTROY,
    )
