"""TrainingPipeline-<env>: the stateless half. Safe to destroy and redeploy; data lives in TrainingData-<env>."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from pipeline_common.data_version import MANIFEST_NAME

from stacks import functions
from stacks.buildspec import buildspec
from stacks.config import PROJECT_ROOT, VALID_RETENTION_DAYS, PipelineConfig
from stacks.nag import acknowledge, acknowledge_findings

# RetentionDays members are declared in ascending order of days (INFINITE last).
RETENTION = dict(zip(sorted(VALID_RETENTION_DAYS), list(logs.RetentionDays)[:-1], strict=True))
SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SAGEMAKER = "sagemaker.amazonaws.com"
# IAM5 finding patterns (see stacks/nag.py): the wildcards each role is expected to carry.
ANY_RESOURCE = r"Resource::\*"  # only for APIs without resource-level permissions (tests hold the allowlist)
ARTIFACT_OBJECTS = r"Resource::.*ArtifactsBucket[0-9A-F]*Arn[0-9A-F]*/\*"
ARTIFACT_GRANT_ACTIONS = (
    r"Action::s3:(GetObject|GetBucket|List|DeleteObject|Abort)\*",
    r"Action::kms:(GenerateDataKey|ReEncrypt)\*",
)


def objects_under(prefix: str) -> str:
    """IAM5 finding pattern for objects under one key prefix of a (cross-stack) bucket."""
    return rf"Resource::.+/{re.escape(prefix)}\*"


HANDLERS = {spec.construct_id: spec.handler for spec in functions.ALL}


@dataclass(frozen=True)
class DataResources:
    """What the pipeline stack uses from TrainingData-<env> (cross-stack references)."""

    key: kms.IKey
    data_bucket: s3.IBucket
    artifacts_bucket: s3.IBucket
    audit_table: dynamodb.ITable
    topic: sns.ITopic
    repository: ecr.IRepository
    cache_repository: ecr.IRepository


class PipelineStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data = data
        self.retention = RETENTION[config.log_retention_days]
        # Built from the fixed name, not the pipeline's token: the Lambdas the pipeline invokes need it,
        # and a token would make a dependency cycle between the pipeline and its own Train action.
        self.pipeline_arn = self.format_arn(service="codepipeline", resource=config.pipeline_name)
        self.training_job_arn = self.format_arn(
            service="sagemaker", resource="training-job", resource_name=f"{config.job_name_prefix}*"
        )
        self.powertools = lambda_.LayerVersion.from_layer_version_arn(
            self, "PowertoolsLayer", config.powertools_layer_arn
        )
        self.code = lambda_.Code.from_asset(
            str(PROJECT_ROOT / "lambdas"), exclude=["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]
        )

        self.idempotency_table = dynamodb.Table(
            self,
            "IdempotencyTable",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=data.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # Short-lived idempotency records only: nothing to keep when the pipeline stack goes.
            removal_policy=RemovalPolicy.DESTROY,
        )

        self.sagemaker_role = self._sagemaker_role()
        self.start_training = self._start_training()
        self.build_project = self._build_project()
        self.pipeline = self._pipeline()
        self.record_status = self._record_status()
        self.data_trigger = self._data_trigger()

    # -- shared building blocks -------------------------------------------------------------------------
    def _queue(self, construct_id: str, **kwargs: Any) -> sqs.Queue:
        return sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.data.key,
            data_key_reuse=Duration.hours(1),  # fewer KMS calls per message
            enforce_ssl=True,
            **kwargs,
        )

    def _dead_letter_queue(self, construct_id: str, what: str) -> sqs.Queue:
        """A DLQ with an alarm to the topic as soon as anything lands in it."""
        queue = self._queue(construct_id, retention_period=Duration.days(14))
        alarm = cloudwatch.Alarm(
            self,
            f"{construct_id}Alarm",
            alarm_description=f"{self.config.pipeline_name}: {what} landed in a dead-letter queue",
            metric=queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.data.topic))
        return queue

    def _function(
        self,
        construct_id: str,
        *,
        environment: dict[str, str],
        timeout: Duration,
        dead_letter_queue: sqs.IQueue | None = None,
    ) -> lambda_.Function:
        """One function with its own role, log group (retention) and X-Ray tracing."""
        log_group = logs.LogGroup(
            self, f"{construct_id}Logs", retention=self.retention, removal_policy=RemovalPolicy.DESTROY
        )
        # Own role with logs scoped to its own group, instead of AWSLambdaBasicExecutionRole (logs:* on *).
        role = iam.Role(self, f"{construct_id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
            )
        )
        function = lambda_.Function(
            self,
            construct_id,
            runtime=lambda_.Runtime.PYTHON_3_12,  # matches the python312 Powertools layer
            architecture=lambda_.Architecture.X86_64,
            handler=HANDLERS[construct_id],
            code=self.code,
            role=role,
            log_group=log_group,
            layers=[self.powertools],
            tracing=lambda_.Tracing.ACTIVE,
            timeout=timeout,
            memory_size=256,
            dead_letter_queue=dead_letter_queue,
            environment={
                "PROJECT_NAME": self.config.project_name,
                "ENV_NAME": self.config.env_name,
                "PIPELINE_NAME": self.config.pipeline_name,
                "POWERTOOLS_SERVICE_NAME": f"{self.config.pipeline_name}-{construct_id}",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **environment,
            },
        )
        _depend_on_policy_only(function, role)
        acknowledge(
            function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12 to match the public Powertools layer (python312) and the tested runtime.",
        )
        return function

    def _kms_statement(self, *, create_grant: bool = False) -> list[iam.PolicyStatement]:
        """Encrypt/decrypt with the data key; explicit actions instead of grant_*'s wildcards."""
        statements = [
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self.data.key.key_arn],
            )
        ]
        if create_grant:
            # SageMaker attaches the key to the training volume through a grant made for the caller.
            statements.append(
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[self.data.key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                )
            )
        return statements

    def _read_data_statements(self) -> list[iam.PolicyStatement]:
        prefix = self.config.data_prefix
        return [
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.data.data_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
            ),
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[self.data.data_bucket.arn_for_objects(f"{prefix}*")],
            ),
        ]

    # -- SageMaker ----------------------------------------------------------------------------------------
    def _sagemaker_role(self) -> iam.Role:
        config, data = self.config, self.data
        role = iam.Role(
            self,
            "SageMakerExecutionRole",
            description=f"{config.pipeline_name} training jobs",
            assumed_by=iam.ServicePrincipal(
                SAGEMAKER, conditions={"StringEquals": {"aws:SourceAccount": self.account}}
            ),
        )
        output_prefixes = [config.model_prefix, config.checkpoint_prefix]
        statements = [
            *self._read_data_statements(),
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
                resources=[
                    self.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=SAGEMAKER_LOG_GROUP,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    ),
                    self.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{SAGEMAKER_LOG_GROUP}:log-stream:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    ),
                ],
            ),
            # PutMetricData has no resource-level permissions; the namespace condition is the scope.
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": SAGEMAKER_LOG_GROUP}},
            ),
            *self._kms_statement(create_grant=True),
        ]
        for statement in statements:
            role.add_to_policy(statement)
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

    # -- Train stage: start-training --------------------------------------------------------------------
    def _start_training(self) -> lambda_.Function:
        config, data = self.config, self.data
        # CodePipeline invokes the action asynchronously: a handler error becomes PutJobFailureResult,
        # and an invocation that fails even that (e.g. a crash on import) lands in this DLQ.
        dlq = self._dead_letter_queue("StartTrainingDlq", "a start-training invocation")
        function = self._function(
            "StartTraining",
            timeout=Duration.minutes(1),
            dead_letter_queue=dlq,
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
        )
        statements = [
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
                    "sagemaker:ListTags",  # a retried invocation checks the existing job's data version
                ],
                resources=[self.training_job_arn],
            ),
            *self._read_data_statements(),
            # The execution's data manifest, written once next to its model and read back by retries. ListBucket
            # turns a missing manifest into 404 instead of 403.
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[data.artifacts_bucket.arn_for_objects(f"{config.model_prefix}*/{MANIFEST_NAME}")],
            ),
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[data.artifacts_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{config.model_prefix}*"]}},
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
            iam.PolicyStatement(actions=["codepipeline:GetPipelineExecution"], resources=[self.pipeline_arn]),
            *self._kms_statement(create_grant=True),
        ]
        for statement in statements:
            function.add_to_role_policy(statement)
        acknowledge_findings(
            function.role,  # type: ignore[arg-type]
            "AwsSolutions-IAM5",
            f"Wildcards only where the scope is a prefix or the API has no resource ARN: training-job/"
            f"{config.job_name_prefix}* (one job per pipeline execution), objects under the data prefix, "
            "codepipeline:PutJob*Result and xray:PutTrace* (no resource-level permissions).",
            [
                ANY_RESOURCE,
                rf"Resource::{re.escape(self.training_job_arn)}",
                objects_under(config.data_prefix),
                rf"Resource::.+/{re.escape(config.model_prefix)}\*/{re.escape(MANIFEST_NAME)}",
            ],
        )
        return function

    # -- Build stage ----------------------------------------------------------------------------------------
    def _build_project(self) -> codebuild.PipelineProject:
        config, data = self.config, self.data
        cache_repository = data.cache_repository
        log_group = logs.LogGroup(
            self, "BuildLogs", retention=self.retention, removal_policy=RemovalPolicy.DESTROY
        )
        project = codebuild.PipelineProject(
            self,
            "ImageBuild",
            description=f"{config.pipeline_name}: build container/ and push it to ECR tagged with the commit",
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.SMALL,
                privileged=True,  # docker build needs the Docker daemon
            ),
            build_spec=codebuild.BuildSpec.from_object(buildspec()),
            encryption_key=data.key,
            timeout=Duration.minutes(60),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)
            ),
            environment_variables={
                "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=data.repository.repository_uri),
                "REPOSITORY_NAME": codebuild.BuildEnvironmentVariable(value=data.repository.repository_name),
                "CACHE_REPOSITORY_URI": codebuild.BuildEnvironmentVariable(
                    value=cache_repository.repository_uri
                ),
            },
        )
        data.repository.grant_pull_push(project)
        cache_repository.grant_pull_push(project)
        project.add_to_role_policy(
            iam.PolicyStatement(actions=["ecr:DescribeImages"], resources=[data.repository.repository_arn])
        )
        acknowledge(
            project,
            "AwsSolutions-CB3",
            "Privileged mode is required to run the Docker daemon that builds the training image.",
        )
        acknowledge_findings(
            project,
            "AwsSolutions-IAM5",
            "CDK-generated build role: ecr:GetAuthorizationToken has no resource-level permissions; the other "
            "wildcards are this project's own log streams and report groups and pipeline artifacts (read grant).",
            [
                ANY_RESOURCE,
                ARTIFACT_OBJECTS,
                *ARTIFACT_GRANT_ACTIONS,
                r"Resource::arn:aws:logs:[^:]+:\d{12}:log-group:/aws/codebuild/<ImageBuild[0-9A-F]+>:\*",
                r"Resource::arn:aws:codebuild:[^:]+:\d{12}:report-group/<ImageBuild[0-9A-F]+>-\*",
            ],
        )
        return project

    # -- Pipeline ---------------------------------------------------------------------------------------------
    def _pipeline(self) -> codepipeline.Pipeline:
        config = self.config
        source_output = codepipeline.Artifact("Source")
        source = actions.CodeStarConnectionsSourceAction(
            action_name="GitHub",
            owner=config.github_owner,
            repo=config.github_repo,
            branch=config.github_branch,
            connection_arn=config.connection_arn,
            output=source_output,
            variables_namespace="Source",
            # The V2 git trigger below decides; with a trigger, default change detection is off anyway.
            trigger_on_push=False,
        )
        build = actions.CodeBuildAction(
            action_name="BuildImage",
            project=self.build_project,
            input=source_output,
            variables_namespace="Build",
            environment_variables={
                "COMMIT_ID": codebuild.BuildEnvironmentVariable(value=source.variables.commit_id),
            },
        )
        trigger = codepipeline.Variable(
            variable_name="TRIGGER", default_value="push", description="push or data-upload"
        )
        data_change = codepipeline.Variable(
            variable_name="DATA_CHANGE", default_value="none", description="summary of new training data"
        )
        train = actions.LambdaInvokeAction(
            action_name="StartTraining",
            lambda_=self.start_training,
            variables_namespace="Train",
            user_parameters={
                "image_uri": build.variable("IMAGE_URI"),
                "image_digest": build.variable("IMAGE_DIGEST"),
                "commit_id": source.variables.commit_id,
                "branch": source.variables.branch_name,
                "repo": source.variables.full_repository_name,
                "pipeline_execution_id": codepipeline.GlobalVariables.EXECUTION_ID,
                "trigger": trigger.reference(),
            },
        )
        pipeline = codepipeline.Pipeline(
            self,
            "Pipeline",
            pipeline_name=config.pipeline_name,
            pipeline_type=codepipeline.PipelineType.V2,
            # Each push and each data upload gets its own training run instead of superseding another.
            execution_mode=codepipeline.ExecutionMode.QUEUED,
            artifact_bucket=self.data.artifacts_bucket,
            restart_execution_on_update=False,
            variables=[trigger, data_change],
            triggers=[
                codepipeline.TriggerProps(
                    provider_type=codepipeline.ProviderType.CODE_STAR_SOURCE_CONNECTION,
                    git_configuration=codepipeline.GitConfiguration(
                        source_action=source,
                        push_filter=[codepipeline.GitPushFilter(branches_includes=[config.github_branch])],
                    ),
                )
            ],
            stages=[
                codepipeline.StageProps(stage_name="Source", actions=[source]),
                codepipeline.StageProps(stage_name="Build", actions=[build]),
                codepipeline.StageProps(stage_name="Train", actions=[train]),
            ],
        )
        _depend_on_policy_only(pipeline, pipeline.role)
        acknowledge_findings(
            pipeline,
            "AwsSolutions-IAM5",
            "CDK-generated pipeline and action roles: read/write of pipeline artifacts (artifact bucket objects "
            "and the artifact key), invoking versions of the start-training function, and lambda:ListFunctions "
            "(no resource-level permissions).",
            [
                ANY_RESOURCE,
                ARTIFACT_OBJECTS,
                *ARTIFACT_GRANT_ACTIONS,
                r"Resource::<StartTraining[0-9A-F]+\.Arn>:\*",
            ],
        )
        return pipeline

    # -- record-status: SageMaker state changes -> audit table + email ----------------------------------------
    def _record_status(self) -> lambda_.Function:
        config, data = self.config, self.data
        # One DLQ for both failure paths: EventBridge giving up on delivery and the function failing
        # after Lambda's async retries. Both hold the same state-change event, replayed the same way.
        dlq = self._dead_letter_queue("RecordStatusDlq", "a training job state change event")
        function = self._function(
            "RecordStatus",
            timeout=Duration.seconds(30),
            dead_letter_queue=dlq,
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "TOPIC_ARN": data.topic.topic_arn,
                "JOB_NAME_PREFIX": config.job_name_prefix,
                "IDEMPOTENCY_TABLE_NAME": self.idempotency_table.table_name,
            },
        )
        for statement in [
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[data.audit_table.table_arn],
            ),
            self._idempotency_statement(),
            iam.PolicyStatement(actions=["sns:Publish"], resources=[data.topic.topic_arn]),
            iam.PolicyStatement(actions=["sagemaker:DescribeTrainingJob"], resources=[self.training_job_arn]),
            *self._kms_statement(),
        ]:
            function.add_to_role_policy(statement)
        rule = events.Rule(
            self,
            "TrainingJobStateChangeRule",
            description=f"{config.pipeline_name}: state changes of this pipeline's training jobs",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Training Job State Change"],
                detail={"TrainingJobName": [{"prefix": config.job_name_prefix}]},
            ),
        )
        rule.add_target(
            targets.LambdaFunction(
                function,
                dead_letter_queue=dlq,
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )
        )
        acknowledge_findings(
            function.role,  # type: ignore[arg-type]
            "AwsSolutions-IAM5",
            f"Wildcards only for training-job/{config.job_name_prefix}* (this pipeline's jobs) and "
            "xray:PutTrace* (no resource-level permissions).",
            [ANY_RESOURCE, rf"Resource::{re.escape(self.training_job_arn)}"],
        )
        return function

    # -- data-trigger: new objects -> queue (batching) -> StartPipelineExecution ---------------------------------
    def _data_trigger(self) -> lambda_.Function:
        config, data = self.config, self.data
        timeout = Duration.seconds(60)
        batching_window = Duration.seconds(60)
        dlq = self._dead_letter_queue("DataTriggerDlq", "a data upload event")
        queue = self._queue(
            "DataEventsQueue",
            # AWS guidance for SQS event sources: at least 6x the function timeout plus the batching window.
            visibility_timeout=Duration.seconds(6 * timeout.to_seconds() + batching_window.to_seconds()),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=3),
        )
        function = self._function(
            "DataTrigger",
            timeout=timeout,
            environment={
                "DATA_BUCKET": data.data_bucket.bucket_name,
                "DATA_PREFIX": config.data_prefix,
                "IDEMPOTENCY_TABLE_NAME": self.idempotency_table.table_name,
            },
        )
        function.add_event_source(
            event_sources.SqsEventSource(
                queue,
                batch_size=100,
                max_batching_window=batching_window,
                report_batch_item_failures=True,
            )
        )
        for statement in [
            iam.PolicyStatement(
                actions=["codepipeline:StartPipelineExecution"], resources=[self.pipeline_arn]
            ),
            # Object versions already started (dedup with a TTL), in the idempotency table.
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[self.idempotency_table.table_arn],
            ),
            *self._kms_statement(),
        ]:
            function.add_to_role_policy(statement)
        rule = events.Rule(
            self,
            "DataObjectCreatedRule",
            description=f"{config.pipeline_name}: new training data under s3://<data bucket>/{config.data_prefix}",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [data.data_bucket.bucket_name]},
                    "object": {"key": [{"prefix": config.data_prefix}]},
                },
            ),
        )
        rule.add_target(targets.SqsQueue(queue, dead_letter_queue=dlq, retry_attempts=8))
        acknowledge_findings(
            function.role,  # type: ignore[arg-type]
            "AwsSolutions-IAM5",
            "Only xray:PutTraceSegments/PutTelemetryRecords, which have no resource-level permissions.",
            [ANY_RESOURCE],
        )
        return function

    def _idempotency_statement(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            resources=[self.idempotency_table.table_arn],
        )


def _depend_on_policy_only(resource: Construct, role: iam.IRole) -> None:
    """Keep DependsOn on the role's DefaultPolicy only; the role itself is already implied by GetAtt.

    CDK lists both, which cfn-lint reports as W3005 (redundant dependency).
    """
    cfn_resource = resource.node.default_child
    policy = role.node.try_find_child("DefaultPolicy")
    if isinstance(cfn_resource, CfnResource) and policy is not None and policy.node.default_child is not None:
        logical_id = Stack.of(resource).get_logical_id(policy.node.default_child)  # type: ignore[arg-type]
        cfn_resource.add_override("DependsOn", [logical_id])
