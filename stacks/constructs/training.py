"""Train stage: the SageMaker execution role and the start-training function the Train action invokes."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_iam as iam
from constructs import Construct
from pipeline_common.data_version import MANIFEST_NAME
from pipeline_common.training_cache import CACHE_INDEX

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import read_training_data, use_key
from stacks.data_resources import DataResources
from stacks.nag import (
    ANY_RESOURCE,
    INLINE_POLICY_REASON,
    acknowledge_compliance,
    acknowledge_findings,
    objects_under,
)

SAGEMAKER = "sagemaker.amazonaws.com"
SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# The QUEUED pipeline runs one Train action at a time; a second copy covers an overlapping retry, and a
# throttled asynchronous invocation waits in Lambda's queue instead of failing.
START_TRAINING_CONCURRENCY = 2


class Training(Construct):
    """Starts one SageMaker training job per pipeline execution and reports its end to CodePipeline."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        pipeline_arn: str,
        training_job_arn: str,
        tuning_job_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.sagemaker_role = self._sagemaker_role(config, data)
        # CodePipeline invokes the action asynchronously: a handler error becomes PutJobFailureResult,
        # and an invocation that fails even that (e.g. a crash on import) lands in the DLQ.
        self.start_training = PipelineFunction(
            self,
            functions.START_TRAINING,
            defaults=defaults,
            timeout=Duration.minutes(1),
            reserved_concurrency=START_TRAINING_CONCURRENCY,
            dead_letter="a start-training invocation",
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "DATA_BUCKET": data.data_bucket.bucket_name,
                "DATA_PREFIX": config.data_prefix,
                "MODEL_BUCKET": data.artifacts_bucket.bucket_name,
                "MODEL_PREFIX": config.model_prefix,
                "CHECKPOINT_PREFIX": config.checkpoint_prefix,
                "KMS_KEY_ARN": data.key.key_arn,
                "SAGEMAKER_ROLE_ARN": self.sagemaker_role.role_arn,
                "JOB_NAME_PREFIX": config.job_name_prefix,
                "TRAINING_CONFIG": config.training.to_json(),
            },
            statements=[
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[self.sagemaker_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER}},
                ),
                iam.PolicyStatement(
                    actions=[
                        "sagemaker:CreateTrainingJob",
                        "sagemaker:DescribeTrainingJob",
                        "sagemaker:StopTrainingJob",
                        "sagemaker:AddTags",
                    ],
                    resources=[training_job_arn],
                ),
                # Watching and stopping this pipeline's tuning jobs; creating them only when tuning is on.
                iam.PolicyStatement(
                    actions=[
                        *(
                            ["sagemaker:CreateHyperParameterTuningJob", "sagemaker:AddTags"]
                            if config.training.tuning
                            else []
                        ),
                        "sagemaker:DescribeHyperParameterTuningJob",
                        "sagemaker:StopHyperParameterTuningJob",
                    ],
                    resources=[tuning_job_arn],
                ),
                *read_training_data(data.data_bucket, config.data_prefix),
                # The execution's data manifest, written once next to its model and read back by retries.
                # ListBucket turns a missing manifest into 404 instead of 403.
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[
                        data.artifacts_bucket.arn_for_objects(f"{config.model_prefix}*/{MANIFEST_NAME}")
                    ],
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[data.artifacts_bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{config.model_prefix}*"]}},
                ),
                # The training cache checks that a reused run's model is still there (HeadObject).
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[
                        data.artifacts_bucket.arn_for_objects(f"{config.model_prefix}*/output/model.tar.gz")
                    ],
                ),
                # The exact data version is the object version ids under the prefix (ListObjectVersions).
                iam.PolicyStatement(
                    actions=["s3:ListBucketVersions"],
                    resources=[data.data_bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [config.data_prefix, f"{config.data_prefix}*"]}},
                ),
                iam.PolicyStatement(
                    actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                    resources=[data.audit_table.table_arn],
                ),
                # The training cache's lookup of a Completed run with the same inputs.
                iam.PolicyStatement(
                    actions=["dynamodb:Query"],
                    resources=[f"{data.audit_table.table_arn}/index/{CACHE_INDEX}"],
                ),
                iam.PolicyStatement(actions=["codepipeline:GetPipelineExecution"], resources=[pipeline_arn]),
                *use_key(data.key, create_grant=True),
            ],
            wildcards=[
                (
                    rf"Resource::{re.escape(training_job_arn)}",
                    f"training-job/{config.job_name_prefix}* (one job per pipeline execution)",
                ),
                (objects_under(config.data_prefix), "objects under the data prefix"),
                (
                    rf"Resource::.+/{re.escape(config.model_prefix)}\*/{re.escape(MANIFEST_NAME)}",
                    "each execution's data manifest next to its model",
                ),
                (
                    rf"Resource::{re.escape(tuning_job_arn)}",
                    f"hyper-parameter-tuning-job/{config.job_name_prefix}* (one tuning job per pipeline execution)",
                ),
                (
                    rf"Resource::.+/{re.escape(config.model_prefix)}\*/output/model\.tar\.gz",
                    "the model artifacts of this pipeline's jobs (a reused run's model must exist)",
                ),
                (ANY_RESOURCE, "codepipeline:PutJob*Result (no resource-level permissions)"),
            ],
        )

    def train_action(self, user_parameters: Mapping[str, str]) -> actions.LambdaInvokeAction:
        """The Train stage's action; its output variables land in the `Train` namespace."""
        return actions.LambdaInvokeAction(
            action_name="StartTraining",
            lambda_=self.start_training.function,
            variables_namespace="Train",
            user_parameters=dict(user_parameters),
        )

    def _sagemaker_role(self, config: PipelineConfig, data: DataResources) -> iam.Role:
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "SageMakerExecutionRole",
            description=f"{config.pipeline_name} training jobs",
            assumed_by=iam.ServicePrincipal(
                SAGEMAKER, conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
        )
        output_prefixes = [config.model_prefix, config.checkpoint_prefix]
        log_group_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=SAGEMAKER_LOG_GROUP,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        statements = [
            *read_training_data(data.data_bucket, config.data_prefix),
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[data.artifacts_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in output_prefixes]}},
            ),
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[data.artifacts_bucket.arn_for_objects(f"{p}*") for p in output_prefixes],
            ),
            # Resuming a spot job reads its own checkpoints back.
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[data.artifacts_bucket.arn_for_objects(f"{config.checkpoint_prefix}*")],
            ),
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                resources=[data.repository.repository_arn],
            ),
            # No resource-level permissions exist for the registry login token.
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
            ),
            # PutMetricData has no resource-level permissions; the namespace condition is the scope.
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": SAGEMAKER_LOG_GROUP}},
            ),
            # OutputDataConfig.KmsKeyId: the API reference requires kms:Encrypt on the execution role.
            *use_key(data.key, encrypt=True, create_grant=True),
        ]
        for statement in statements:
            role.add_to_principal_policy(statement)
        acknowledge_compliance(role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        acknowledge_findings(
            role,
            "AwsSolutions-IAM5",
            "Wildcards only where the scope is a prefix or the API has no resource ARN: objects under the data, "
            "model and checkpoint prefixes; log streams of /aws/sagemaker/TrainingJobs; ecr:GetAuthorizationToken "
            "and cloudwatch:PutMetricData (namespace-conditioned) which have no resource-level permissions.",
            [
                ANY_RESOURCE,
                *(objects_under(p) for p in (config.data_prefix, *output_prefixes)),
                rf"Resource::arn:aws:logs:[^:]+:\d{{12}}:log-group:{SAGEMAKER_LOG_GROUP}:log-stream:\*",
            ],
        )
        return role
