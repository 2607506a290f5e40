"""Emulator: a moto server (or --endpoint-url), and the stacks' resources created in it from the templates.

Each Lambda's environment is resolved from the same templates, so local and cloud cannot drift. An SQS
queue subscribed to the notification topic is the inbox the emails are read from, exactly as SNS sent them.
"""

from __future__ import annotations

import boto3

from mlpipe.local.console import note
from mlpipe.local.deployment import LocalDeployment
from mlpipe.local.emulator import MotoServer
from mlpipe.local.state import RunState
from stacks.functions import RECORD_STATUS

EMAIL_INBOX = "local-run-email-inbox"


def run(state: RunState) -> None:
    data, pipeline = state.need("templates")
    endpoint = state.options.endpoint_url or state.cleanup.enter_context(MotoServer()).endpoint_url
    state.endpoint_url = endpoint
    state.session = boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name=state.region
    )
    deployment = LocalDeployment(data, pipeline, state.region)
    deployment.create(state.session, endpoint)
    state.deployment = deployment
    sqs = state.client("sqs")
    inbox = sqs.create_queue(QueueName=EMAIL_INBOX)["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    state.client("sns").subscribe(
        TopicArn=deployment.function(RECORD_STATUS.handler).environment["TOPIC_ARN"],
        Protocol="sqs",
        Endpoint=inbox_arn,
    )
    state.email_inbox = inbox
    note(f"moto at {endpoint}; {len(deployment.resources)} resources from the templates")
