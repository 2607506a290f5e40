"""SQS queues of the pipeline: always KMS-encrypted and TLS-only; dead-letter queues alarm when used."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

DEAD_LETTER_RETENTION = Duration.days(14)  # SQS's maximum: time to notice, fix and redrive


class EncryptedQueue(sqs.Queue):
    """A queue encrypted with the project's key that refuses plain-HTTP access."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.hours(1),  # fewer KMS calls per message
            enforce_ssl=True,
            **kwargs,
        )


class AlarmedDeadLetterQueue(EncryptedQueue):
    """A dead-letter queue whose alarm emails the topic as soon as anything lands in it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        alarm_topic: sns.ITopic,
        pipeline_name: str,
        what: str,
    ) -> None:
        super().__init__(scope, construct_id, key=key, retention_period=DEAD_LETTER_RETENTION)
        self.alarm = cloudwatch.Alarm(
            self,
            "Alarm",
            alarm_description=f"{pipeline_name}: {what} landed in a dead-letter queue",
            metric=self.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarm.add_alarm_action(cw_actions.SnsAction(alarm_topic))
