"""Record and notify: SageMaker state changes -> record-status -> audit table and one email per transition."""

from __future__ import annotations

import re

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct
from pipeline_common.model_meta import OUTPUT_ARCHIVE

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import use_key
from stacks.data_resources import DataResources
from stacks.nag import acknowledge_compliance

STATE_CHANGE = "SageMaker Training Job State Change"
TUNING_STATE_CHANGE = "SageMaker HyperParameter Tuning Job State Change"
# State changes come in bursts (several per job, hundreds on a DLQ redrive). EventBridge invokes
# asynchronously, so a throttled event waits in Lambda's queue (up to 6 hours) rather than being lost:
# this only paces a burst, at about 10 events a second.
RECORD_STATUS_CONCURRENCY = 10


class RecordAndNotify(Construct):
    """Applies each training job state change to the audit record and emails real transitions."""

    @staticmethod
    def output_archives(config: PipelineConfig) -> str:
        """`<model prefix><job prefix>*/output/output.tar.gz`: SageMaker's key for each job's output data."""
        return f"{config.model_prefix}{config.job_name_prefix}*/output/{OUTPUT_ARCHIVE}"

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        training_job_arn: str,
        tuning_job_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        # Short-lived records with a TTL: record-status's Powertools idempotency keys (a day) and data-trigger's
        # object-version claims (a week). The local run finds this table by "Idempotency".
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
            # Nothing to keep when the pipeline stack goes.
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge_compliance(
            self.idempotency_table,
            "DynamoDBInBackupPlan",
            "Holds only short-lived records with a TTL (Powertools idempotency keys, data-trigger's object-version "
            "claims); losing them can cost a duplicate email or run, never data: there is nothing to restore.",
        )
        # One DLQ for both failure paths: EventBridge giving up on delivery and the function failing
        # after Lambda's async retries. Both hold the same state-change event, replayed the same way.
        self.record_status = PipelineFunction(
            self,
            functions.RECORD_STATUS,
            defaults=defaults,
            timeout=Duration.seconds(30),
            reserved_concurrency=RECORD_STATUS_CONCURRENCY,
            dead_letter="a training job state change event",
            environment={
                "AUDIT_TABLE_NAME": data.audit_table.table_name,
                "TOPIC_ARN": data.topic.topic_arn,
                "JOB_NAME_PREFIX": config.job_name_prefix,
                "IDEMPOTENCY_TABLE_NAME": self.idempotency_table.table_name,
            },
            statements=[
                iam.PolicyStatement(
                    actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                    resources=[data.audit_table.table_arn],
                ),
                iam.PolicyStatement(
                    actions=[
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                    ],
                    resources=[self.idempotency_table.table_arn],
                ),
                iam.PolicyStatement(actions=["sns:Publish"], resources=[data.topic.topic_arn]),
                iam.PolicyStatement(actions=["sagemaker:DescribeTrainingJob"], resources=[training_job_arn]),
                # A finished tuning job's summary: its best job and every trial's billable time. Read-only,
                # and granted with tuning off too, so a tuning job that outlives a redeploy is still recorded.
                iam.PolicyStatement(
                    actions=[
                        "sagemaker:DescribeHyperParameterTuningJob",
                        "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                    ],
                    resources=[tuning_job_arn],
                ),
                # A Completed job's output.tar.gz (its model-meta.json: task, objective, classes), only
                # that object of this pipeline's jobs (pipeline_common.model_meta says why this file).
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[data.artifacts_bucket.arn_for_objects(self.output_archives(config))],
                ),
                *use_key(data.key),
            ],
            wildcards=[
                (
                    rf"Resource::{re.escape(training_job_arn)}",
                    f"training-job/{config.job_name_prefix}* (this pipeline's jobs)",
                ),
                (
                    rf"Resource::.+/{re.escape(self.output_archives(config))}",
                    "the output.tar.gz (model-meta.json) of this pipeline's jobs",
                ),
                (
                    rf"Resource::{re.escape(tuning_job_arn)}",
                    f"hyper-parameter-tuning-job/{config.job_name_prefix}* (this pipeline's tuning jobs)",
                ),
            ],
        )
        self.rule = events.Rule(
            self,
            "TrainingJobStateChangeRule",
            description=f"{config.pipeline_name}: state changes of this pipeline's training and tuning jobs",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[STATE_CHANGE, TUNING_STATE_CHANGE],
                # Each detail type names its job in its own field; `$or` matches either with our prefix.
                detail={
                    "$or": [
                        {"TrainingJobName": [{"prefix": config.job_name_prefix}]},
                        {"HyperParameterTuningJobName": [{"prefix": config.job_name_prefix}]},
                    ]
                },
            ),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                self.record_status.function,
                dead_letter_queue=self.record_status.dead_letter_queue,
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )
        )
