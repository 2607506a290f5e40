"""The deploy pipeline: from an approved model package to the staging endpoint, its golden test, an optional
person's go-ahead, and the production endpoint behind the guardrail.

Approval (a *Model Package State Change* to Approved, this account and group) → start-deploy, which writes
the request object (the pipeline's S3 source: CodePipeline requires a source stage) and starts an execution
with the package in the `PACKAGE_ARN` variable, once per event (the event id is the client request token).
The executions are QUEUED, so two deploys never overlap on an endpoint.

    Source (the request object) → Staging (deploy-model) → GoldenTest (golden-test, through the staging API)
      → [Approve (manual, `production_manual_approval`)] → Production (deploy-model, blue/green with
      auto-rollback)

deploy-model keeps its action open with continuation tokens until the endpoint is InService, or the update
has been rolled back (then it fails with the alarm that fired).
"""

from __future__ import annotations

import re

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct
from pipeline_common.endpoints import DEPLOY_REQUEST_KEY, PRODUCTION, SCALABLE_DIMENSION, STAGING
from pipeline_common.model_package import APPROVED

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.inference_api import InferenceApi
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import depend_on_policy_only, read_model_packages, use_key
from stacks.constructs.record_notify import RecordAndNotify
from stacks.constructs.serving import SAGEMAKER, Serving
from stacks.data_resources import DataResources
from stacks.nag import (
    ANY_RESOURCE,
    ARTIFACT_GRANT_ACTIONS,
    ARTIFACT_OBJECTS,
    INLINE_POLICY_REASON,
    acknowledge_compliance,
    acknowledge_findings,
    logical_id,
    model_packages_finding,
)

PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
# One deploy action at a time (QUEUED), plus an overlapping retry; the events are rare.
DEPLOY_CONCURRENCY = 2
GOLDEN_TEST_CONCURRENCY = 1
START_DEPLOY_CONCURRENCY = 1


class Deployment(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        serving: Serving,
        apis: dict[str, InferenceApi],
        model_package_arns: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        assert config.deploy is not None
        stack = Stack.of(self)
        group = config.model_package_group_name
        prefix = f"{config.project_name}-{config.env_name}-"
        pipeline_arn = stack.format_arn(service="codepipeline", resource=config.deploy_pipeline_name)
        arn = {
            kind: stack.format_arn(service="sagemaker", resource=kind, resource_name=f"{prefix}*")
            for kind in ("model", "endpoint-config", "endpoint", "transform-job")
        }
        records = iam.PolicyStatement(
            actions=["dynamodb:GetItem", "dynamodb:UpdateItem"], resources=[data.audit_table.table_arn]
        )
        publish = iam.PolicyStatement(actions=["sns:Publish"], resources=[data.topic.topic_arn])
        common_env = {
            "AUDIT_TABLE_NAME": data.audit_table.table_name,
            "TOPIC_ARN": data.topic.topic_arn,
            "MODEL_PACKAGE_GROUP_NAME": group,
            "DEPLOY_PIPELINE_NAME": config.deploy_pipeline_name,
        }
        sagemaker_wildcards = [
            (rf"Resource::{re.escape(a)}", f"{kind}/{prefix}* (this project's {kind}s)")
            for kind, a in arn.items()
        ]

        self.start_deploy = PipelineFunction(
            self,
            functions.START_DEPLOY,
            defaults=defaults,
            timeout=Duration.seconds(30),
            reserved_concurrency=START_DEPLOY_CONCURRENCY,
            dead_letter="a model package approval event",
            environment={
                **common_env,
                "REQUEST_BUCKET": data.artifacts_bucket.bucket_name,
                "REQUEST_KEY": DEPLOY_REQUEST_KEY,
            },
            statements=[
                iam.PolicyStatement(
                    actions=["codepipeline:StartPipelineExecution"], resources=[pipeline_arn]
                ),
                iam.PolicyStatement(
                    actions=["s3:PutObject"],
                    resources=[data.artifacts_bucket.arn_for_objects(DEPLOY_REQUEST_KEY)],
                ),
                *use_key(data.key),
            ],
        )
        self.approval_rule = events.Rule(
            self,
            "ApprovedPackageRule",
            description=f"{config.pipeline_name}: deploy each package of group {group} when it is approved",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[PACKAGE_STATE_CHANGE],
                account=[Aws.ACCOUNT_ID],
                detail={"ModelPackageGroupName": [group], "ModelApprovalStatus": [APPROVED]},
            ),
        )
        self.approval_rule.add_target(
            targets.LambdaFunction(
                self.start_deploy.function,
                dead_letter_queue=self.start_deploy.dead_letter_queue,
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )
        )

        transform = config.deploy.batch_transform
        self.deploy_model = PipelineFunction(
            self,
            functions.DEPLOY_MODEL,
            defaults=defaults,
            timeout=Duration.minutes(1),
            reserved_concurrency=DEPLOY_CONCURRENCY,
            dead_letter="a deploy-model invocation",
            environment={
                **common_env,
                "KMS_KEY_ARN": data.key.key_arn,
                "ENDPOINT_ROLE_ARN": serving.execution_role.role_arn,
                "DEPLOY_CONFIG": config.deploy.to_json(),
                "CAPTURE_URI": f"s3://{data.artifacts_bucket.bucket_name}/data-capture/",
                "DATA_BUCKET": data.data_bucket.bucket_name,
                "MODEL_BUCKET": data.artifacts_bucket.bucket_name,
            },
            statements=[
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[serving.execution_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER}},
                ),
                iam.PolicyStatement(
                    actions=["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:AddTags"],
                    resources=[arn["model"]],
                ),
                iam.PolicyStatement(
                    actions=[
                        "sagemaker:CreateEndpointConfig",
                        "sagemaker:DescribeEndpointConfig",
                        "sagemaker:AddTags",
                    ],
                    resources=[arn["endpoint-config"]],
                ),
                iam.PolicyStatement(
                    actions=[
                        "sagemaker:CreateEndpoint",
                        "sagemaker:UpdateEndpoint",
                        "sagemaker:DescribeEndpoint",
                        "sagemaker:UpdateEndpointWeightsAndCapacities",
                        "sagemaker:AddTags",
                    ],
                    resources=[arn["endpoint"]],
                ),
                # Target-tracking autoscaling of the real-time variants. Application Auto Scaling has no
                # resource ARNs for scalable targets: the conditions hold it to SageMaker variant counts.
                iam.PolicyStatement(
                    actions=[
                        "application-autoscaling:RegisterScalableTarget",
                        "application-autoscaling:DeregisterScalableTarget",
                        "application-autoscaling:PutScalingPolicy",
                    ],
                    resources=["*"],
                    conditions={
                        "StringEquals": {
                            "application-autoscaling:service-namespace": "sagemaker",
                            "application-autoscaling:scalable-dimension": SCALABLE_DIMENSION,
                        }
                    },
                ),
                iam.PolicyStatement(
                    actions=["application-autoscaling:DescribeScalableTargets"], resources=["*"]
                ),
                # The target-tracking policy's own alarms, made with the caller's permissions.
                iam.PolicyStatement(
                    actions=[
                        "cloudwatch:PutMetricAlarm",
                        "cloudwatch:DescribeAlarms",
                        "cloudwatch:DeleteAlarms",
                    ],
                    resources=[
                        stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=f"TargetTracking-endpoint/{prefix}*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    ],
                ),
                iam.PolicyStatement(
                    actions=["iam:CreateServiceLinkedRole"],
                    resources=[
                        stack.format_arn(
                            service="iam",
                            region="",
                            resource="role",
                            resource_name=f"aws-service-role/{AUTOSCALING_SERVICE}/*",
                        )
                    ],
                    conditions={"StringEquals": {"iam:AWSServiceName": AUTOSCALING_SERVICE}},
                ),
                *(
                    [
                        iam.PolicyStatement(
                            actions=[
                                "sagemaker:CreateTransformJob",
                                "sagemaker:DescribeTransformJob",
                                "sagemaker:AddTags",
                            ],
                            resources=[arn["transform-job"]],
                        )
                    ]
                    if transform is not None
                    else []
                ),
                *read_model_packages(model_package_arns),
                # Which rollback alarm fired, for the action's failure reason.
                iam.PolicyStatement(
                    actions=["cloudwatch:DescribeAlarmHistory"], resources=serving.alarm_arns
                ),
                records,
                publish,
                # KmsKeyId on the endpoint config: SageMaker attaches the key through a grant for the caller.
                *use_key(data.key, create_grant=True),
            ],
            wildcards=[
                *sagemaker_wildcards,
                model_packages_finding(group),
                (
                    ANY_RESOURCE,
                    "codepipeline:PutJob*Result and application-autoscaling (no resource-level permissions; "
                    "conditioned on SageMaker variant counts)",
                ),
                (
                    r"Resource::arn:aws:cloudwatch:.*:alarm:TargetTracking-endpoint/.*",
                    "the target-tracking alarms of this project's endpoints",
                ),
                (
                    r"Resource::arn:aws:iam::.*:role/aws-service-role/.*",
                    "Application Auto Scaling's service-linked role for SageMaker",
                ),
            ],
        )
        self.deploy_model.function.node.add_dependency(serving.execution_role)

        staging_api = apis[STAGING]
        self.golden_test = PipelineFunction(
            self,
            functions.GOLDEN_TEST,
            defaults=defaults,
            timeout=Duration.minutes(5),
            reserved_concurrency=GOLDEN_TEST_CONCURRENCY,
            dead_letter="a golden-test invocation",
            environment={
                **common_env,
                "STAGING_API_URL": staging_api.url,
                "DEPLOY_CONFIG": config.deploy.to_json(),
            },
            statements=[
                # The golden set: golden.json in the training job's output.tar.gz (sagemaker_contract.golden).
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[
                        data.artifacts_bucket.arn_for_objects(RecordAndNotify.output_archives(config))
                    ],
                ),
                # The staging API with the caller's own SigV4, as a client would call it.
                iam.PolicyStatement(actions=["execute-api:Invoke"], resources=[staging_api.invoke_arn()]),
                *read_model_packages(model_package_arns),
                records,
                publish,
                *use_key(data.key),
            ],
            wildcards=[
                (
                    rf"Resource::.+/{re.escape(RecordAndNotify.output_archives(config))}",
                    "the output.tar.gz (golden.json) of this pipeline's jobs",
                ),
                model_packages_finding(group),
                (ANY_RESOURCE, "codepipeline:PutJob*Result (no resource-level permissions)"),
            ],
        )
        self.pipeline = self._pipeline(config, data, apis)

    def _pipeline(
        self, config: PipelineConfig, data: DataResources, apis: dict[str, InferenceApi]
    ) -> codepipeline.Pipeline:
        assert config.deploy is not None
        package = codepipeline.Variable(
            variable_name="PACKAGE_ARN",
            default_value="none",
            description="the approved model package to deploy",
        )
        request = codepipeline.Artifact("DeployRequest")
        source = actions.S3SourceAction(
            action_name="DeployRequest",
            bucket=data.artifacts_bucket,
            bucket_key=DEPLOY_REQUEST_KEY,
            output=request,
            trigger=actions.S3Trigger.NONE,  # start-deploy starts each execution with its package
        )

        def deploy(stage: str) -> actions.LambdaInvokeAction:
            return actions.LambdaInvokeAction(
                action_name=f"Deploy{stage.capitalize()}",
                lambda_=self.deploy_model.function,
                variables_namespace=f"Deploy{stage.capitalize()}",
                user_parameters={
                    "stage": stage,
                    "package_arn": package.reference(),
                    "pipeline_execution_id": codepipeline.GlobalVariables.EXECUTION_ID,
                },
            )

        golden = actions.LambdaInvokeAction(
            action_name="GoldenTest",
            lambda_=self.golden_test.function,
            variables_namespace="GoldenTest",
            user_parameters={
                "package_arn": package.reference(),
                "pipeline_execution_id": codepipeline.GlobalVariables.EXECUTION_ID,
            },
        )
        stages = [
            codepipeline.StageProps(stage_name="Source", actions=[source]),
            codepipeline.StageProps(stage_name="Staging", actions=[deploy(STAGING)]),
            codepipeline.StageProps(stage_name="GoldenTest", actions=[golden]),
        ]
        if config.deploy.production_manual_approval:
            stages.append(
                codepipeline.StageProps(
                    stage_name="Approve",
                    actions=[
                        actions.ManualApprovalAction(
                            action_name="PromoteToProduction",
                            notification_topic=data.topic,
                            additional_information=(
                                "The golden test passed on staging. Approve to deploy this package to production "
                                f"behind the {config.deploy.guardrail.type} guardrail."
                            ),
                            external_entity_link=apis[STAGING].url,
                        )
                    ],
                )
            )
        stages.append(codepipeline.StageProps(stage_name="Production", actions=[deploy(PRODUCTION)]))
        pipeline = codepipeline.Pipeline(
            self,
            "Pipeline",
            pipeline_name=config.deploy_pipeline_name,
            pipeline_type=codepipeline.PipelineType.V2,
            execution_mode=codepipeline.ExecutionMode.QUEUED,
            artifact_bucket=data.artifacts_bucket,
            restart_execution_on_update=False,
            variables=[package],
            stages=stages,
        )
        depend_on_policy_only(pipeline, pipeline.role)
        # The approval action's notification goes to the KMS-encrypted topic.
        pipeline.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[data.key.key_arn])
        )
        acknowledge_compliance(pipeline, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        acknowledge_findings(
            pipeline,
            "AwsSolutions-IAM5",
            "CDK-generated pipeline and action roles: reading the deploy request and read/write of pipeline "
            "artifacts (artifact bucket objects and the key), invoking versions of deploy-model and golden-test, "
            "and lambda:ListFunctions (no resource-level permissions).",
            [
                ANY_RESOURCE,
                ARTIFACT_OBJECTS,
                *ARTIFACT_GRANT_ACTIONS,
                *(
                    rf"Resource::<{logical_id(f'{spec.construct_id}Function')}\.Arn>:\*"
                    for spec in (functions.DEPLOY_MODEL, functions.GOLDEN_TEST)
                ),
            ],
        )
        return pipeline
