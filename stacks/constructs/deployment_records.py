"""record-deployment: what SageMaker reports about this project's endpoints and transform jobs, on the
audit trail and by email.

An EventBridge rule on *SageMaker Endpoint Deployment State Change* (this project's endpoints) and
*SageMaker Transform Job State Change* (this project's transform jobs), this account only.
"""

from __future__ import annotations

import re

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import read_model_packages, use_key
from stacks.constructs.serving import Serving
from stacks.data_resources import DataResources
from stacks.nag import model_packages_finding

DEPLOYMENT_STATE_CHANGE = "SageMaker Endpoint Deployment State Change"
TRANSFORM_STATE_CHANGE = "SageMaker Transform Job State Change"
RECORD_DEPLOYMENT_CONCURRENCY = 2


class DeploymentRecords(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        serving: Serving,
        model_package_arns: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        prefix = f"{config.project_name}-{config.env_name}-"
        arn = {
            kind: stack.format_arn(service="sagemaker", resource=kind, resource_name=f"{prefix}*")
            for kind in ("endpoint", "endpoint-config", "transform-job")
        }
        self.record = PipelineFunction(
            self,
            functions.RECORD_DEPLOYMENT,
            defaults=defaults,
            timeout=Duration.seconds(30),
            reserved_concurrency=RECORD_DEPLOYMENT_CONCURRENCY,
            dead_letter="an endpoint deployment or transform job state change event",
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "TOPIC_ARN": data.topic.topic_arn,
                "MODEL_PACKAGE_GROUP_NAME": config.model_package_group_name,
            },
            statements=[
                iam.PolicyStatement(
                    actions=[
                        "sagemaker:DescribeEndpoint",
                        "sagemaker:DescribeEndpointConfig",
                        "sagemaker:DescribeTransformJob",
                    ],
                    resources=list(arn.values()),
                ),
                *read_model_packages(model_package_arns),
                # The rollback's reason: which of the auto-rollback alarms went into ALARM.
                iam.PolicyStatement(
                    actions=["cloudwatch:DescribeAlarmHistory"], resources=serving.alarm_arns
                ),
                iam.PolicyStatement(
                    actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
                    resources=[data.audit_table.table_arn],
                ),
                iam.PolicyStatement(actions=["sns:Publish"], resources=[data.topic.topic_arn]),
                *use_key(data.key),
            ],
            wildcards=[
                *(
                    (rf"Resource::{re.escape(a)}", f"{kind}/{prefix}* (this project's {kind}s)")
                    for kind, a in arn.items()
                ),
                model_packages_finding(config.model_package_group_name),
            ],
        )
        self.rule = events.Rule(
            self,
            "DeploymentStateChangeRule",
            description=f"{config.pipeline_name}: deployments of this project's endpoints and its transform jobs",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                account=[Aws.ACCOUNT_ID],
                detail_type=[DEPLOYMENT_STATE_CHANGE, TRANSFORM_STATE_CHANGE],
                detail={
                    "$or": [
                        {"EndpointName": [{"prefix": prefix}]},
                        {"TransformJobName": [{"prefix": prefix}]},
                    ]
                },
            ),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                self.record.function,
                dead_letter_queue=self.record.dead_letter_queue,
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )
        )
