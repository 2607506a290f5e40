"""Data uploads: new objects under the data prefix -> queue (batching) -> data-trigger -> a pipeline run."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import functions
from stacks.checkov_skips import REASONS as CHECKOV_REASONS
from stacks.checkov_skips import skip_checks
from stacks.config import PipelineConfig
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.policies import use_key
from stacks.constructs.queues import AlarmedDeadLetterQueue, EncryptedQueue
from stacks.data_resources import DataResources
from stacks.nag import acknowledge_compliance

TIMEOUT = Duration.seconds(60)
BATCHING_WINDOW = Duration.seconds(60)
MAX_RECEIVES = 3
# The SQS poller runs at most POLLER_CONCURRENCY batches at once (2 is its minimum), below the function's
# reserved concurrency: a batch throttled by Lambda would go back to the queue and count a receive toward
# the DLQ, dead-lettering valid uploads. One batch holds up to 100 events, so 2 keep up with any upload.
POLLER_CONCURRENCY = 2
DATA_TRIGGER_CONCURRENCY = 5


class DataUploads(Construct):
    """Coalesces S3 Object Created events into one StartPipelineExecution per batch."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        defaults: FunctionDefaults,
        pipeline_arn: str,
        dedup_table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        # Events EventBridge cannot deliver, and messages that failed MAX_RECEIVES times, land here.
        self.dead_letter_queue = AlarmedDeadLetterQueue(
            self,
            "DataTriggerDlq",
            key=data.key,
            alarm_topic=data.topic,
            pipeline_name=config.pipeline_name,
            what="a data upload event",
        )
        self.queue = EncryptedQueue(
            self,
            "DataEventsQueue",
            key=data.key,
            # AWS guidance for SQS event sources: at least 6x the function timeout plus the batching window.
            visibility_timeout=Duration.seconds(6 * TIMEOUT.to_seconds() + BATCHING_WINDOW.to_seconds()),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVES
            ),
        )
        # No function DLQ: an SQS event source is synchronous, so failed messages go to the queue's redrive.
        self.data_trigger = PipelineFunction(
            self,
            functions.DATA_TRIGGER,
            defaults=defaults,
            timeout=TIMEOUT,
            reserved_concurrency=DATA_TRIGGER_CONCURRENCY,
            environment={
                "DATA_BUCKET": data.data_bucket.bucket_name,
                "DATA_PREFIX": config.data_prefix,
                "IDEMPOTENCY_TABLE_NAME": dedup_table.table_name,
            },
            statements=[
                iam.PolicyStatement(
                    actions=["codepipeline:StartPipelineExecution"], resources=[pipeline_arn]
                ),
                # One execution per object version: claims and started markers, with a TTL.
                iam.PolicyStatement(
                    actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
                    resources=[dedup_table.table_arn],
                ),
                *use_key(data.key),
            ],
        )
        # The queue's own DLQ takes failed messages (checkov and cdk-nag's packs).
        skip_checks(self.data_trigger.function, "CKV_AWS_116")
        acknowledge_compliance(self.data_trigger.function, "LambdaDLQ", CHECKOV_REASONS["CKV_AWS_116"])
        self.data_trigger.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=100,
                max_batching_window=BATCHING_WINDOW,
                report_batch_item_failures=True,
                max_concurrency=POLLER_CONCURRENCY,
            )
        )
        self.rule = events.Rule(
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
        self.rule.add_target(
            targets.SqsQueue(self.queue, dead_letter_queue=self.dead_letter_queue, retry_attempts=8)
        )
