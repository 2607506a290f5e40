"""Shared test set-up: no test can reach real AWS; the emulator, the synthesized app and the local AWS are
made once per session, lazily, by the tests that ask for them.

- `moto_server`: one moto server process (`mlpipe.local.emulator.MotoServer`), for the emulator's own tests.
- `synthesized`: the CDK app synthesized in-process once, with cdk-nag (the stack tests assert on it; the
  handler tests build each function's role from it).
- `local_cloud`: moto in this process with IAM enforced, the harness identity, the gateway, and every
  role of the synthesized templates (`mlpipe.local.cloud.LocalCloud`).
- `emulated`: the harness's own clients (full access) and helpers that make per-test resources.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import moto
import pytest

from mlpipe.local.emulator import read_sns_inbox
from mlpipe.local.lambda_runtime import LambdaContext
from tests.audit_schema import AUDIT_TABLE_SCHEMA
from tests.processes import marked_processes, new_mark

# The handler harness (tests/lambda_fixtures.py): shared by tests/lambdas, tests/local and tests/faults.
pytest_plugins = ["tests.lambda_fixtures"]


def _refuse_mock_aws(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(
        "moto's mock_aws resets the in-process backends that the session's local_cloud shares (every later "
        "test would then fail with InvalidAccessKeyId): use the `emulated` fixture"
    )


# Refused before any test module imports it (a test using it once broke every test after it in CI).
moto.mock_aws = _refuse_mock_aws

# -- no real AWS, ever ------------------------------------------------------------------------------------
_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # No profile, config or credentials file of the person running the tests is read.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
os.environ.update(_FAKE_AWS_ENV)
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
for _name in (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
):
    os.environ.pop(_name, None)

REGION = "us-east-1"
IAM_TYPES = ("AWS::IAM::Role", "AWS::IAM::Policy")

# -- two workers (pytest-xdist, `make test`) -----------------------------------------------------------------
# `-n 2`: each test module runs whole on whichever worker is free (its module fixtures, e.g. a trained model,
# are made once), except that every module marked `image` or `e2e` runs on one worker, one after another:
# they share podman, the image tags and the container names a run checks for leftovers. (xdist's own
# `loadgroup` cannot do this with pytest 9: it renames items through an attribute pytest 9 no longer reads.)
PODMAN_GROUP = "podman"
_PODMAN_MARK = re.compile(r"pytest\.mark\.(?:image|e2e)\b")
_TESTS = Path(__file__).resolve().parent


def _podman_modules() -> frozenset[str]:
    """The test modules (paths as in node ids) that mark any test `image` or `e2e`."""
    return frozenset(
        str(path.relative_to(_TESTS.parent))
        for path in _TESTS.rglob("test_*.py")
        if _PODMAN_MARK.search(path.read_text())
    )


@pytest.hookimpl(optionalhook=True)  # only with pytest-xdist (`-p no:xdist` runs everything in one process)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    podman = _podman_modules()

    class ModulesAndOnePodmanGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return PODMAN_GROUP if module in podman else module

    return ModulesAndOnePodmanGroup(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked `image` or `e2e` in a way the scheduler's scan of the source misses would run beside
    another podman test: refuse that, rather than let the two disturb each other."""
    podman = _podman_modules()
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if (item.get_closest_marker("image") or item.get_closest_marker("e2e")) and module not in podman:
            raise pytest.UsageError(
                f"{item.nodeid} is marked image/e2e but {module} has no `pytest.mark.image`"
            )


# -- nothing the suite starts outlives it ------------------------------------------------------------------
# Every process the suite starts inherits this variable (servers, workers, moto, podman's monitors), also
# after its parent died and it was re-parented: at the end of the session no process may still carry it.
_SESSION_VARIABLE, _SESSION_VALUE = new_mark("MLPIPE_TEST_SESSION")
os.environ[_SESSION_VARIABLE] = _SESSION_VALUE


def _session_processes() -> dict[int, str]:
    """pid -> command line of every other live process that carries this session's mark.

    Except aws-cdk-lib's JSII kernel (node, and the node it runs): the stacks tests start it in-process, and it
    stops when this interpreter exits, after the session."""
    found = marked_processes(_SESSION_VARIABLE, _SESSION_VALUE)
    kernels = {
        pid for pid, (parent, command) in found.items() if "jsii-runtime" in command and parent == os.getpid()
    }
    return {
        pid: command for pid, (parent, command) in found.items() if not (pid in kernels or parent in kernels)
    }


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_suite() -> Iterator[None]:
    """Set up first, torn down last: after every other fixture has stopped what it started."""
    yield
    deadline = time.monotonic() + 10  # processes that were told to stop get a moment to exit
    while (left := _session_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # do not leave them running for the next session either
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes started by the test suite outlived it: {left}"


# -- the emulator, the app, the local AWS -------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """One moto server for the session, started on first use (a free loopback port)."""
    from mlpipe.local.emulator import MotoServer

    with MotoServer() as server:
        yield server


@dataclass
class Synthesized:
    app: Any
    data: Any  # aws_cdk.assertions.Template
    pipeline: Any
    data_json: dict[str, Any]
    pipeline_json: dict[str, Any]
    template_paths: tuple[str, ...]  # data, pipeline (, deploy): the files `cdk synth` would write to cdk.out
    deploy: Any = None  # the deploy stack (ModelDeploy-<env>), for the app built from cdk.json
    deploy_json: dict[str, Any] | None = None


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The repo's cdk.json config, cdk-nag attached: synth itself proves zero unacknowledged findings."""
    from aws_cdk.assertions import Template

    from stacks.application import build_app

    app = build_app(outdir=str(tmp_path_factory.mktemp("cdk.out")), read_local_file=False)
    assembly = app.synth()
    data_stack = assembly.get_stack_by_name("TrainingData-dev")
    pipeline_stack = assembly.get_stack_by_name("TrainingPipeline-dev")
    deploy_stack = assembly.get_stack_by_name("ModelDeploy-dev")
    data, pipeline, deploy = data_stack.template, pipeline_stack.template, deploy_stack.template
    paths = (
        data_stack.template_full_path,
        pipeline_stack.template_full_path,
        deploy_stack.template_full_path,
    )
    yield Synthesized(
        app,
        Template.from_json(data),
        Template.from_json(pipeline),
        data,
        pipeline,
        paths,
        Template.from_json(deploy),
        deploy,
    )


TUNING_ENV = "tune"


@pytest.fixture(scope="session")
def synthesized_tuning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The app again with `tuning` on (the local run's example search space), as environment `tune`: what
    changes with tuning (start-training's role may create tuning jobs; its TRAINING_CONFIG)."""
    import json

    from aws_cdk.assertions import Template

    from mlpipe.local.tuning import EXAMPLE_TUNING
    from stacks.application import build_app

    app = build_app(
        {"env_name": TUNING_ENV, "tuning": json.dumps(EXAMPLE_TUNING)},
        outdir=str(tmp_path_factory.mktemp("cdk.out.tuning")),
        read_local_file=False,
    )
    assembly = app.synth()
    data_stack = assembly.get_stack_by_name(f"TrainingData-{TUNING_ENV}")
    pipeline_stack = assembly.get_stack_by_name(f"TrainingPipeline-{TUNING_ENV}")
    data, pipeline = data_stack.template, pipeline_stack.template
    paths = (data_stack.template_full_path, pipeline_stack.template_full_path)
    yield Synthesized(app, Template.from_json(data), Template.from_json(pipeline), data, pipeline, paths)


@pytest.fixture(scope="session")
def tuning_deployment(local_cloud: Any, synthesized_tuning: Synthesized) -> Any:
    """The tuning variant's roles in the session's local AWS (their names differ by the stack name), so a
    handler can run under the start-training role that may create tuning jobs."""
    from mlpipe.local.deployment import LocalDeployment, StackTemplate

    deployment = LocalDeployment(
        StackTemplate(f"TrainingData-{TUNING_ENV}", synthesized_tuning.data_json),
        StackTemplate(f"TrainingPipeline-{TUNING_ENV}", synthesized_tuning.pipeline_json),
        REGION,
    )
    deployment.create(local_cloud.session, local_cloud.moto_url, only=IAM_TYPES)
    for function in deployment.functions.values():
        local_cloud.deployment.register_role(
            function.role_arn, list(deployment.role_actions(function.role_arn))
        )
    return deployment


@pytest.fixture(scope="session")
def local_cloud(synthesized: Synthesized) -> Iterator[Any]:
    """The session's local AWS: moto in this process with IAM enforced, the gateway, and the synthesized
    templates' roles (data, pipeline and deploy stacks; the tests make their own buckets and tables).
    No test may use moto's `mock_aws`, which would reset the backends this shares."""
    from mlpipe.local.cloud import LocalCloud
    from mlpipe.local.deployment import LocalDeployment, StackTemplate

    with LocalCloud.running(REGION) as cloud:
        templates = (
            StackTemplate("TrainingData-dev", synthesized.data_json),
            StackTemplate("TrainingPipeline-dev", synthesized.pipeline_json),
        )
        deploy = StackTemplate("ModelDeploy-dev", synthesized.deploy_json or {})
        cloud.deploy(LocalDeployment(*templates, REGION, deploy), only=IAM_TYPES)
        yield cloud


def unique_name(prefix: str) -> str:
    """Resource names unique per test, so tests sharing the session's server never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Emulated:
    """The harness's clients (full access, directly on moto) and helpers that make the project's resources."""

    cloud: Any  # LocalCloud

    def client(self, service: str) -> Any:
        return self.cloud.client(service)

    # -- resources -----------------------------------------------------------------------------------------
    def data_bucket(self, versioned: bool = True) -> str:
        name = unique_name("data")
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def put_objects(self, bucket: str, objects: dict[str, bytes]) -> dict[str, str]:
        """key -> version id ('null' in an unversioned bucket)."""
        s3 = self.client("s3")
        return {
            key: s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId", "null")
            for key, body in objects.items()
        }

    def audit_table(self) -> str:
        name = unique_name("audit")
        self.client("dynamodb").create_table(TableName=name, **AUDIT_TABLE_SCHEMA)
        return name

    def idempotency_table(self) -> str:
        name = unique_name("idempotency")
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
        )
        return name

    def queue(
        self,
        name: str | None = None,
        visibility_timeout: int = 30,
        dead_letter_arn: str | None = None,
        max_receive_count: int = 3,
    ) -> tuple[str, str]:
        """(queue url, queue arn)."""
        sqs = self.client("sqs")
        attributes = {"VisibilityTimeout": str(visibility_timeout)}
        if dead_letter_arn:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(max_receive_count)}
            )
        url = sqs.create_queue(QueueName=name or unique_name("queue"), Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def topic_with_inbox(self) -> tuple[str, str]:
        """(topic arn, inbox queue url): every message published to the topic lands in the inbox as the SNS
        envelope (raw delivery off), so tests read Subject, Message and MessageAttributes as sent."""
        topic_arn = self.client("sns").create_topic(Name=unique_name("notifications"))["TopicArn"]
        inbox_url, inbox_arn = self.queue(unique_name("inbox"))
        self.client("sns").subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=inbox_arn,
            Attributes={"RawMessageDelivery": "false"},
        )
        return topic_arn, inbox_url

    def read_inbox(self, queue_url: str) -> list[dict[str, Any]]:
        """Drain the inbox: [{subject, body, attributes: {name: value}}] in arrival order."""
        return read_sns_inbox(self.client("sqs"), queue_url)

    def get_record(self, table: str, job_name: str) -> dict[str, Any] | None:
        from pipeline_common import audit

        item = self.client("dynamodb").get_item(
            TableName=table, Key={"job_name": {"S": job_name}}, ConsistentRead=True
        )
        return audit.from_item(item["Item"]) if "Item" in item else None

    def scan(self, table: str) -> list[dict[str, Any]]:
        from pipeline_common import audit

        return [audit.from_item(item) for item in self.client("dynamodb").scan(TableName=table)["Items"]]


@pytest.fixture
def emulated(local_cloud: Any) -> Emulated:
    return Emulated(local_cloud)


@pytest.fixture
def lambda_context() -> LambdaContext:
    """The same context object the local run passes to the handlers."""
    return LambdaContext(function_name="test-function", region=REGION)
