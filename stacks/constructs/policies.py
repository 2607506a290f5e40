"""IAM statements more than one concern needs, written once with explicit actions (no grant_* wildcards)."""

from __future__ import annotations

from aws_cdk import CfnResource, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct


def use_key(key: kms.IKey, *, encrypt: bool = False, create_grant: bool = False) -> list[iam.PolicyStatement]:
    """Encrypt and decrypt with the project's key (data keys; `encrypt` also allows kms:Encrypt itself)."""
    actions = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    statements = [
        iam.PolicyStatement(
            actions=[*actions, "kms:Encrypt"] if encrypt else actions, resources=[key.key_arn]
        )
    ]
    if create_grant:
        # SageMaker attaches the key to the training volume through a grant made for the caller.
        statements.append(
            iam.PolicyStatement(
                actions=["kms:CreateGrant"],
                resources=[key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
    return statements


def read_training_data(bucket: s3.IBucket, prefix: str) -> list[iam.PolicyStatement]:
    """List and read the objects under the data prefix, nothing else in the bucket."""
    return [
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:GetObjectVersion"], resources=[bucket.arn_for_objects(f"{prefix}*")]
        ),
    ]


def read_model_packages(model_package_arns: list[str]) -> list[iam.PolicyStatement]:
    """List and describe the packages of the project's model package group (its ARN and its versions')."""
    return [
        iam.PolicyStatement(
            actions=["sagemaker:ListModelPackages", "sagemaker:DescribeModelPackage"],
            resources=list(model_package_arns),
        )
    ]


def depend_on_policy_only(resource: Construct, role: iam.IRole) -> None:
    """Keep DependsOn on the role's DefaultPolicy only; the role itself is already implied by GetAtt.

    CDK lists both, which cfn-lint reports as W3005 (redundant dependency).
    """
    cfn_resource = resource.node.default_child
    policy = role.node.try_find_child("DefaultPolicy")
    if isinstance(cfn_resource, CfnResource) and policy is not None and policy.node.default_child is not None:
        logical_id = Stack.of(resource).get_logical_id(policy.node.default_child)  # type: ignore[arg-type]
        cfn_resource.add_override("DependsOn", [logical_id])
