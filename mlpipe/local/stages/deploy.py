"""Emulator: the local AWS, and the stacks' resources created in it from the synthesized templates.

moto (in this process, or the emulator at --endpoint-url) with IAM enforced, the gateway with the stand-ins
(SageMaker's training API and model registry, CodePipeline), and from the templates: buckets, tables,
topic, queues, the model package group, every IAM role with its policies' actions, and the EventBridge
rules (`mlpipe.local.eventbus`). Each Lambda's environment is resolved from the same templates, so local
and cloud cannot drift. An SQS queue subscribed to the notification topic is the inbox the emails are read
from, exactly as SNS sent them.

With `--deploy`, the deploy stack (`ModelDeploy-<env>`) is deployed too: its roles, queues and rules, and
its deploy pipeline next to the training pipeline in the CodePipeline stand-in, so an approval delivered
through its rule starts the deploy pipeline (start-deploy) under start-deploy's own role.

The model registry keeps its groups and packages in the emulator's S3 (one object), so they live as long
as the emulator: nothing with the in-process one, across runs with `--endpoint-url`.
"""

from __future__ import annotations

from mlpipe.local import containers
from mlpipe.local.cloud import LocalCloud
from mlpipe.local.codepipeline import LocalCodePipeline
from mlpipe.local.console import note
from mlpipe.local.deployment import LocalDeployment, StackTemplate
from mlpipe.local.eventbus import LocalEventBus
from mlpipe.local.model_registry import LocalModelRegistry
from mlpipe.local.sagemaker import LocalSageMaker
from mlpipe.local.state import RunState
from mlpipe.local.store import S3JsonStore
from stacks.functions import RECORD_STATUS, START_DEPLOY, START_TRAINING

EMAIL_INBOX = "local-run-email-inbox"
# The stand-ins' state, in the emulator: what SageMaker would still know in a later run against it.
STATE_BUCKET = "mlpipe-local-stand-ins"


def pipeline_variables(stack: StackTemplate) -> dict[str, str]:
    """A stack's pipeline's declared variables and their defaults, from the template (TRIGGER, RETRAIN,
    PACKAGE_ARN, ...)."""
    (pipeline,) = stack.of_type("AWS::CodePipeline::Pipeline").values()
    return {v["Name"]: str(v.get("DefaultValue", "")) for v in pipeline["Properties"].get("Variables", [])}


def run(state: RunState) -> None:
    data, pipeline = state.need("templates")
    cloud: LocalCloud = state.cleanup.enter_context(
        LocalCloud.running(state.region, state.options.endpoint_url)
    )
    state.cloud = cloud
    state.sagemaker = LocalSageMaker(
        s3_as_role=cloud.s3_as_role,
        workdir=state.work / "jobs",
        start_container=containers.start_training_container,
        stop_container=containers.remove_container,
        on_state_change=state.events.append,
        region=state.region,
        note=note,
        store=S3JsonStore(cloud.client("s3"), STATE_BUCKET, "training-jobs.json"),
        create_network=containers.create_network,
        remove_network=containers.remove_network,
    )
    state.cleanup.callback(state.sagemaker.stop_all)
    state.registry = LocalModelRegistry(
        state.region,
        state.events.append,
        store=S3JsonStore(cloud.client("s3"), STATE_BUCKET, "model-registry.json"),
    )
    cloud.add_service(state.sagemaker)
    cloud.add_service(state.registry)  # before deploying: the model package group is created in it
    deploy_stack = (
        StackTemplate.load(state.work / "cdk.out", f"ModelDeploy-{data.name.removeprefix('TrainingData-')}")
        if state.options.deploy
        else None
    )
    deployment = cloud.deploy(LocalDeployment(data, pipeline, state.region, deploy_stack))
    state.deployment = deployment
    state.bus = LocalEventBus(deployment)
    state.codepipeline = LocalCodePipeline(
        deployment.function(START_TRAINING.handler).environment["PIPELINE_NAME"],
        pipeline_variables(deployment.pipeline),
    )
    if deploy_stack is not None:
        state.deploy_pipeline = LocalCodePipeline(
            deployment.function(START_DEPLOY.handler).environment["DEPLOY_PIPELINE_NAME"],
            pipeline_variables(deploy_stack),
        )
        state.codepipeline.add_pipeline(state.deploy_pipeline)
    cloud.add_service(state.codepipeline)
    sqs = cloud.client("sqs")
    inbox = sqs.create_queue(QueueName=EMAIL_INBOX)["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    cloud.client("sns").subscribe(
        TopicArn=deployment.function(RECORD_STATUS.handler).environment["TOPIC_ARN"],
        Protocol="sqs",
        Endpoint=inbox_arn,
    )
    state.email_inbox = inbox
    roles = sum(
        1
        for stack in deployment.stacks[1:]
        for key in deployment.resources
        if key[0] == stack.name and key[1] in stack.of_type("AWS::IAM::Role")
    )
    where = state.options.endpoint_url or "in this process"
    packages = len(state.registry.packages)
    note(
        f"local AWS at {cloud.gateway.url} (moto {where}, IAM enforced); "
        f"{len(deployment.resources)} resources from the templates ({roles} roles), "
        f"{len(state.bus.rules)} EventBridge rules to Lambdas, {packages} model packages from earlier runs"
    )
