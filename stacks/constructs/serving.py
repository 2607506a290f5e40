"""What SageMaker needs to serve the approved models: the endpoints' execution role and the production
endpoint's auto-rollback alarms.

The endpoints themselves are created by deploy-model from the approved package (their model is not known at
synth), under fixed names (`pipeline_common.endpoints`), so this construct can scope IAM and alarms to them.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from constructs import Construct
from pipeline_common.endpoints import VARIANT, alarm_names

from stacks.config import PipelineConfig
from stacks.constructs.policies import use_key
from stacks.data_resources import DataResources
from stacks.nag import (
    ANY_RESOURCE,
    INLINE_POLICY_REASON,
    acknowledge_compliance,
    acknowledge_findings,
    objects_under,
)

SAGEMAKER = "sagemaker.amazonaws.com"
DATA_CAPTURE_PREFIX = "data-capture/"  # in the artifacts bucket, one folder per endpoint (SageMaker's layout)


class Serving(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        production_endpoint: str,
    ) -> None:
        super().__init__(scope, construct_id)
        assert config.deploy is not None
        stack = Stack.of(self)
        prefix = f"{config.project_name}-{config.env_name}-"
        self.execution_role = iam.Role(
            self,
            "EndpointExecutionRole",
            description=f"{config.pipeline_name} endpoints and transform jobs",
            assumed_by=iam.ServicePrincipal(
                SAGEMAKER, conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
        )
        log_groups = [
            stack.format_arn(
                service="logs",
                resource="log-group",
                resource_name=f"{group}:*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for group in ("/aws/sagemaker/Endpoints/*", "/aws/sagemaker/TransformJobs")
        ]
        statements = [
            # The image, by digest from the package.
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                resources=[data.repository.repository_arn],
            ),
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            # The model artifacts (read only) and the data capture (write only).
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[data.artifacts_bucket.arn_for_objects(f"{config.model_prefix}*")],
            ),
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[data.artifacts_bucket.arn_for_objects(f"{DATA_CAPTURE_PREFIX}*")],
            ),
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=log_groups,
            ),
            # kms:Encrypt: the data capture and the transform output are written with the project's key.
            *use_key(data.key, encrypt=True),
        ]
        wildcards = [
            (objects_under(config.model_prefix), "model artifacts under the model prefix"),
            (objects_under(DATA_CAPTURE_PREFIX), "data capture under its prefix"),
            (
                r"Resource::arn:aws:logs:.*:log-group:/aws/sagemaker/.*",
                "the endpoints' and transform jobs' log groups",
            ),
            (ANY_RESOURCE, "ecr:GetAuthorizationToken has no resource ARN"),
        ]
        transform = config.deploy.batch_transform
        if transform is not None:
            statements += [
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[data.data_bucket.arn_for_objects(f"{transform.input_prefix}*")],
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[data.data_bucket.bucket_arn],
                    conditions={
                        "StringLike": {"s3:prefix": [transform.input_prefix, f"{transform.input_prefix}*"]}
                    },
                ),
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[data.artifacts_bucket.arn_for_objects(f"{transform.output_prefix}*")],
                ),
            ]
            wildcards += [
                (objects_under(transform.input_prefix), "batch transform input under its prefix"),
                (objects_under(transform.output_prefix), "batch transform output under its prefix"),
            ]
        for statement in statements:
            self.execution_role.add_to_principal_policy(statement)
        acknowledge_compliance(self.execution_role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        patterns = [pattern for pattern, _ in wildcards]
        acknowledge_findings(
            self.execution_role,
            "AwsSolutions-IAM5",
            "Wildcards only under this project's prefixes or where the API has no resource ARN: "
            + "; ".join(reason for _, reason in wildcards)
            + ".",
            patterns,
        )
        self.endpoint_arn_pattern = stack.format_arn(
            service="sagemaker", resource="endpoint", resource_name=f"{prefix}*"
        )

        # Auto-rollback: SageMaker watches these during each baking period of a blue/green update and returns
        # all traffic to the old fleet when one fires. The variant keeps its name across updates, so the
        # alarms name the endpoint and the variant; they also email through the topic.
        guardrail = config.deploy.guardrail
        errors_name, latency_name = alarm_names(production_endpoint)
        dimensions = {"EndpointName": production_endpoint, "VariantName": VARIANT}
        self.errors_alarm = cloudwatch.Alarm(
            self,
            "Invocation5xxAlarm",
            alarm_name=errors_name,
            alarm_description=f"{production_endpoint}: more than {guardrail.max_5xx} 5xx errors in a minute",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="Invocation5XXErrors",
                dimensions_map=dimensions,
                statistic="Sum",
                period=Duration.minutes(1),
            ),
            threshold=guardrail.max_5xx,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.latency_alarm = cloudwatch.Alarm(
            self,
            "ModelLatencyAlarm",
            alarm_name=latency_name,
            alarm_description=f"{production_endpoint}: p99 model latency above {guardrail.p99_latency_ms:g} ms",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="ModelLatency",  # microseconds
                dimensions_map=dimensions,
                statistic="p99",
                period=Duration.minutes(1),
            ),
            threshold=guardrail.p99_latency_ms * 1000,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (self.errors_alarm, self.latency_alarm):
            alarm.add_alarm_action(cw_actions.SnsAction(data.topic))
        self.alarm_arns = [self.errors_alarm.alarm_arn, self.latency_alarm.alarm_arn]
