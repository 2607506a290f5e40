"""Register stage and approvals: the model package of each run, and every decision on it.

- register-model, the Register stage's Lambda invoke action: one package per training job in the project's
  model package group (the data stack's, so packages outlive the pipeline), PendingManualApproval or
  Approved (`auto_approve`).
- An EventBridge rule on *SageMaker Model Package State Change*, limited to this account and this group
  and to decisions (Approved, Rejected) → record-approval: the decision on the audit record, one email each.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Aws, Duration
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct
from pipeline_common.model_package import DECISIONS, PackageSpec
from sagemaker_contract.content_types import REQUEST_TYPES, RESPONSE_TYPES

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import read_model_packages, use_key
from stacks.data_resources import DataResources
from stacks.nag import ANY_RESOURCE, model_packages_finding

PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
# One Register action at a time (QUEUED); decisions are rare and come one by one. A throttled asynchronous
# invocation is retried by Lambda (for up to 6 hours), never lost.
REGISTER_CONCURRENCY = 1
RECORD_APPROVAL_CONCURRENCY = 1


def package_spec(config: PipelineConfig) -> PackageSpec:
    """REGISTRY_CONFIG: the config's choices and the media types the image's `serve` answers."""
    return PackageSpec(
        auto_approve=config.registry.auto_approve,
        inference_instance_types=config.registry.inference_instance_types,
        content_types=REQUEST_TYPES,
        response_types=RESPONSE_TYPES,
    )


class ModelRegistry(Construct):
    """register-model and its action; the approval rule and record-approval."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        model_package_arns: list[str],
        packages_arn: str,
        dedup_table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        group = config.model_package_group_name
        records = iam.PolicyStatement(
            actions=["dynamodb:GetItem", "dynamodb:UpdateItem"], resources=[data.audit_table.table_arn]
        )
        publish = iam.PolicyStatement(actions=["sns:Publish"], resources=[data.topic.topic_arn])
        self.register = PipelineFunction(
            self,
            functions.REGISTER_MODEL,
            defaults=defaults,
            timeout=Duration.minutes(1),
            reserved_concurrency=REGISTER_CONCURRENCY,
            dead_letter="a register-model invocation",
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "TOPIC_ARN": data.topic.topic_arn,
                "MODEL_PACKAGE_GROUP_NAME": group,
                "JOB_NAME_PREFIX": config.job_name_prefix,
                "REGISTRY_CONFIG": package_spec(config).to_json(),
            },
            statements=[
                iam.PolicyStatement(actions=["sagemaker:CreateModelPackage"], resources=model_package_arns),
                *read_model_packages(model_package_arns),
                records,
                publish,
                *use_key(data.key),
            ],
            wildcards=[
                model_packages_finding(group),
                (ANY_RESOURCE, "codepipeline:PutJob*Result (no resource-level permissions)"),
            ],
        )

        # One DLQ for both failure paths (EventBridge giving up, the function failing after Lambda's retries).
        self.record_approval = PipelineFunction(
            self,
            functions.RECORD_APPROVAL,
            defaults=defaults,
            timeout=Duration.seconds(30),
            reserved_concurrency=RECORD_APPROVAL_CONCURRENCY,
            dead_letter="a model package state change event",
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "TOPIC_ARN": data.topic.topic_arn,
                "MODEL_PACKAGE_GROUP_NAME": group,
                "IDEMPOTENCY_TABLE_NAME": dedup_table.table_name,
            },
            statements=[
                iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=[packages_arn]),
                records,
                iam.PolicyStatement(
                    actions=[
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                    ],
                    resources=[dedup_table.table_arn],
                ),
                publish,
                *use_key(data.key),
            ],
            wildcards=[model_packages_finding(group)],
        )
        self.rule = events.Rule(
            self,
            "ModelPackageStateChangeRule",
            description=f"{config.pipeline_name}: approval decisions on the packages of model package group {group}",
            # This account only (a group's packages can be shared across accounts), this group only.
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[PACKAGE_STATE_CHANGE],
                account=[Aws.ACCOUNT_ID],
                detail={"ModelPackageGroupName": [group], "ModelApprovalStatus": list(DECISIONS)},
            ),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                self.record_approval.function,
                dead_letter_queue=self.record_approval.dead_letter_queue,
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )
        )

    def register_action(self, user_parameters: Mapping[str, str]) -> actions.LambdaInvokeAction:
        """The Register stage's action; its output variables land in the `Register` namespace."""
        return actions.LambdaInvokeAction(
            action_name="RegisterModel",
            lambda_=self.register.function,
            variables_namespace="Register",
            user_parameters=dict(user_parameters),
        )
