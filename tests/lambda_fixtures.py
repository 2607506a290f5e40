"""Fixtures for tests that invoke the handlers: each handler's environment on the moto server, and stubbed
clients for the calls moto lacks or fakes (CodePipeline job results and pipeline starts, SageMaker).
A pytest plugin (see tests/conftest.py), so tests/lambdas and tests/local both use them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.stub import Stubber
from pipeline_common import aws

from tests.conftest import REGION, Emulated, boto3_session
from tests.lambdas.builders import PREFIX

TRAINING_CONFIG = {
    "instance_type": "ml.m5.large",
    "instance_count": 1,
    "volume_size_gb": 30,
    "max_runtime_seconds": 3600,
    "use_spot": False,
    "hyperparameters": {"max_depth": "6", "eta": "0.2"},
}


class Recorder:
    """Wraps a client and records (operation, kwargs) of every call, then delegates to it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return method(**kwargs)

        return call

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == operation]


@dataclass
class Stubbed:
    client: Any
    stubber: Stubber
    recorder: Recorder = field(init=False)

    def __post_init__(self) -> None:
        self.recorder = Recorder(self.client)


@pytest.fixture
def stub() -> Iterator[Any]:
    """stub("sagemaker") -> Stubbed: a real botocore client with a Stubber, checked for leftovers after."""
    made: list[Stubbed] = []

    def make(service: str) -> Stubbed:
        client = boto3_session().client(service, region_name=REGION)
        stubber = Stubber(client)
        stubber.activate()
        made.append(Stubbed(client, stubber))
        return made[-1]

    yield make
    for stubbed in made:
        stubbed.stubber.assert_no_pending_responses()
        stubbed.stubber.deactivate()


@dataclass
class StartEnv:
    bucket: str
    table: str
    versions: dict[str, str]  # the data objects (not the folder markers) -> version id


@pytest.fixture
def start_env(emulated: Emulated, monkeypatch: pytest.MonkeyPatch) -> StartEnv:
    bucket = emulated.data_bucket(versioned=True)
    versions = emulated.put_objects(
        bucket,
        {
            "datasets/train/part-0.csv": b"y,x1\n1,2\n",
            "datasets/train/part-1.csv": b"y,x1\n3,4\n",
            "datasets/validation/val.csv": b"y,x1\n5,6\n",
        },
    )
    emulated.put_objects(
        bucket, {"datasets/train/": b"", "datasets/validation/": b""}
    )  # console folder markers
    table = emulated.audit_table()
    env = {
        "PROJECT_NAME": "mlpipe",
        "ENV_NAME": "test",
        "PIPELINE_NAME": "TrainingPipeline-test",
        "AUDIT_TABLE_NAME": table,
        "DATA_BUCKET": bucket,
        "DATA_PREFIX": "datasets/",
        "MODEL_BUCKET": "models-bucket",
        "MODEL_PREFIX": "models/",
        "CHECKPOINT_PREFIX": "checkpoints/",
        "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/mlpipe-sagemaker",
        "JOB_NAME_PREFIX": PREFIX,
        "TRAINING_CONFIG": json.dumps(TRAINING_CONFIG),
        "AWS_LAMBDA_FUNCTION_NAME": "start-training",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return StartEnv(bucket, table, versions)


@dataclass
class RecordEnv:
    table: str
    topic_arn: str
    inbox: str
    idempotency_table: str


@pytest.fixture
def record_env(emulated: Emulated, monkeypatch: pytest.MonkeyPatch) -> RecordEnv:
    table = emulated.audit_table()
    topic_arn, inbox = emulated.topic_with_inbox()
    idempotency = emulated.idempotency_table()
    env = {
        "PROJECT_NAME": "mlpipe",
        "ENV_NAME": "test",
        "PIPELINE_NAME": "TrainingPipeline-test",
        "AUDIT_TABLE_NAME": table,
        "TOPIC_ARN": topic_arn,
        "JOB_NAME_PREFIX": PREFIX,
        "IDEMPOTENCY_TABLE_NAME": idempotency,
        "AWS_LAMBDA_FUNCTION_NAME": "record-status",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return RecordEnv(table, topic_arn, inbox, idempotency)


@pytest.fixture
def trigger_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "PROJECT_NAME": "mlpipe",
        "ENV_NAME": "test",
        "PIPELINE_NAME": "TrainingPipeline-test",
        "DATA_BUCKET": "data-bucket",
        "DATA_PREFIX": "datasets/",
        "AWS_LAMBDA_FUNCTION_NAME": "data-trigger",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def clients() -> Iterator[Any]:
    """clients({"sagemaker": ..., "codepipeline": ...}) injects replacements for the rest of the test."""
    stack: list[Any] = []

    def inject(replacements: dict[str, Any]) -> None:
        context = aws.use_clients(replacements)
        context.__enter__()
        stack.append(context)

    yield inject
    for context in reversed(stack):
        context.__exit__(None, None, None)
