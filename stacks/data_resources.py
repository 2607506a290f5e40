"""What the pipeline stack uses from TrainingData-<env>: the interface between the two stacks."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns


@dataclass(frozen=True)
class DataResources:
    """Stateful resources, passed as cross-stack references."""

    key: kms.IKey
    data_bucket: s3.IBucket
    artifacts_bucket: s3.IBucket
    audit_table: dynamodb.ITable
    topic: sns.ITopic
    repository: ecr.IRepository
    cache_repository: ecr.IRepository
    model_package_group_arn: str  # the group's ARN (a cross-stack reference); its name is in the config
