"""Evaluate stage: the quality gate, a Lambda invoke action after Train.

The evaluate-model function compares the new job's final metrics (DescribeTrainingJob) with the current
Approved package's (its evaluation document in S3) and with the configured floor, writes the job's own
evaluation document next to its model, and fails the action with one readable reason when the model does
not pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_iam as iam
from constructs import Construct
from pipeline_common.model_package import EVALUATION_NAME

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import read_model_packages, use_key
from stacks.data_resources import DataResources
from stacks.nag import ANY_RESOURCE, model_packages_finding

# The QUEUED pipeline runs one Evaluate action at a time. An asynchronous invocation that finds the one
# copy busy (an overlapping retry) is throttled and retried by Lambda, not lost.
EVALUATE_CONCURRENCY = 1


def evaluation_objects(model_prefix: str) -> str:
    """IAM5 finding pattern for the evaluation documents next to the models."""
    return rf"Resource::.+/{re.escape(model_prefix)}\*/{re.escape(EVALUATION_NAME)}"


class QualityGate(Construct):
    """The evaluate-model function and the action the Evaluate stage runs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        training_job_arn: str,
        model_package_arns: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        gate = config.registry.quality_gate
        self.evaluate = PipelineFunction(
            self,
            functions.EVALUATE_MODEL,
            defaults=defaults,
            timeout=Duration.minutes(1),
            reserved_concurrency=EVALUATE_CONCURRENCY,
            dead_letter="an evaluate-model invocation",
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "TOPIC_ARN": data.topic.topic_arn,
                "MODEL_BUCKET": data.artifacts_bucket.bucket_name,
                "MODEL_PREFIX": config.model_prefix,
                "MODEL_PACKAGE_GROUP_NAME": config.model_package_group_name,
                "JOB_NAME_PREFIX": config.job_name_prefix,
                "QUALITY_GATE": gate.to_json(),
            },
            statements=[
                iam.PolicyStatement(actions=["sagemaker:DescribeTrainingJob"], resources=[training_job_arn]),
                *read_model_packages(model_package_arns),
                # Each job's evaluation document, written once; the approved package's read back.
                # ListBucket turns a missing document into 404 instead of 403.
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[
                        data.artifacts_bucket.arn_for_objects(f"{config.model_prefix}*/{EVALUATION_NAME}")
                    ],
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[data.artifacts_bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{config.model_prefix}*"]}},
                ),
                iam.PolicyStatement(
                    actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
                    resources=[data.audit_table.table_arn],
                ),
                iam.PolicyStatement(actions=["sns:Publish"], resources=[data.topic.topic_arn]),
                *use_key(data.key),
            ],
            wildcards=[
                (
                    rf"Resource::{re.escape(training_job_arn)}",
                    f"training-job/{config.job_name_prefix}* (this pipeline's jobs)",
                ),
                model_packages_finding(config.model_package_group_name),
                (evaluation_objects(config.model_prefix), "each job's evaluation document next to its model"),
                (ANY_RESOURCE, "codepipeline:PutJob*Result (no resource-level permissions)"),
            ],
        )

    def action(self, user_parameters: Mapping[str, str]) -> actions.LambdaInvokeAction:
        """The Evaluate stage's action; its output variables land in the `Evaluate` namespace."""
        return actions.LambdaInvokeAction(
            action_name="QualityGate",
            lambda_=self.evaluate.function,
            variables_namespace="Evaluate",
            user_parameters=dict(user_parameters),
        )
