"""The handler harness: each test's own resources, the stand-ins, and invocations under the function's role.

A pytest plugin (see tests/conftest.py), used by tests/lambdas, tests/local and tests/faults. Every
invocation goes through `LocalCloud.invoke`: the handler runs with its test environment, `AWS_ENDPOINT_URL`
at the gateway and the temporary credentials of its own role from the synthesized template, with IAM
enforced by moto and the gateway. SageMaker (training and the model registry) and CodePipeline are the
local stand-ins; the training container is `ScriptedTraining`, which writes what `train` would, without a
process. Each test has its own model package group, so tests never see each other's packages.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_common import aws, metrics

from mlpipe.local.codepipeline import LocalCodePipeline
from mlpipe.local.iam import APPROVER_ACTIONS, Credentials
from mlpipe.local.lambda_runtime import LambdaContext
from mlpipe.local.model_registry import LocalModelRegistry
from mlpipe.local.sagemaker import LocalSageMaker, LocalTrainingJob
from stacks.functions import (
    DATA_TRIGGER,
    EVALUATE_MODEL,
    RECORD_APPROVAL,
    RECORD_STATUS,
    REGISTER_MODEL,
    START_TRAINING,
    FunctionSpec,
)
from stacks.model import DEFAULT_MODEL_DIR, metric_names
from tests.conftest import REGION, Emulated, unique_name
from tests.lambdas.builders import IMAGE_URI, PREFIX, T0, default_tags, user_parameters

PIPELINE_NAME = "TrainingPipeline-test"
# The default model's metric names, as the stack reads them from its model.json.
METRIC_NAMES = list(metric_names(DEFAULT_MODEL_DIR))
TRAINING_CONFIG = {
    "instance_type": "ml.m5.large",
    "metric_names": METRIC_NAMES,
    "instance_count": 1,
    "volume_size_gb": 30,
    "max_runtime_seconds": 3600,
    "use_spot": False,
    "hyperparameters": {"max_depth": "6", "eta": "0.2"},
}
METRICS = {"validation:rmse": 0.4213, "train:rmse": 0.301}
QUALITY_GATE = {"metric": "validation:rmse", "direction": "minimize", "max_regression": 0.02, "floor": 0.5}
REGISTRY_CONFIG = {
    "auto_approve": False,
    "inference_instance_types": ["ml.m5.large"],
    "content_types": ["text/csv", "application/json"],
    "response_types": ["text/csv"],
}
# Every attempt botocore makes for one call: the first and `max_attempts` retries (its retries dict counts
# retries only).
ALL_ATTEMPTS = aws.CLIENT_CONFIG["retries"]["max_attempts"] + 1


# -- the training container, scripted ------------------------------------------------------------------------
class ScriptedProcess:
    """What LocalSageMaker needs of a container process: poll() and wait()."""

    def __init__(self, exit_code: int, polls: int) -> None:
        self.exit_code, self.remaining = exit_code, polls
        self.killed = False

    def poll(self) -> int | None:
        if self.killed:
            return 137
        if self.remaining > 0:
            self.remaining -= 1
            return None
        return self.exit_code

    def wait(self, timeout: float | None = None) -> int:
        return 137 if self.killed else self.exit_code


@dataclass
class ScriptedTraining:
    """Stands in for `docker run <image> train`: writes the model and metric lines (or the failure file) the
    way the container does, then exits after `polls` polls (the job is InProgress until then)."""

    outcome: str = "ok"  # ok | fail
    polls: int = 0
    metrics: dict[str, float] = field(default_factory=lambda: dict(METRICS))
    failure: str = "Hyperparameter max_depth is -1, but it must be an integer from 1 to 32."
    started: list[str] = field(default_factory=list)  # the jobs started: each one's first host container
    processes: dict[str, ScriptedProcess] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)  # the multi-host jobs' networks, while they exist
    # The metrics of a run from its hyperparameters (e.g. so the trials of a tuning job differ); None: `metrics`.
    metrics_for: Callable[[dict[str, str]], dict[str, float]] | None = None

    def start(
        self,
        image: str,
        opt_ml: Path,
        name: str,
        log_file: Path,
        *,
        network: str | None = None,
        hostname: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ScriptedProcess:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if hostname not in (None, "algo-1"):
            # Another host of a multi-host job: the container contract has only the first host write the
            # model, the metric lines and a failure; the others end cleanly.
            log_file.write_text("")
            process = ScriptedProcess(0, self.polls)
            self.processes[name] = process
            return process
        self.started.append(name)  # one per job: its first host's container
        if self.outcome == "ok":
            rows = sum(len(p.read_text().splitlines()) for p in (opt_ml / "input/data/train").rglob("*.csv"))
            hyperparameters = json.loads((opt_ml / "input/config/hyperparameters.json").read_text())
            (opt_ml / "model" / "model.txt").write_text(f"trained on {rows} rows with {hyperparameters}")
            metrics = self.metrics_for(hyperparameters) if self.metrics_for else self.metrics
            log_file.write_text("".join(f"METRIC {k}={v}\n" for k, v in metrics.items()))
            process = ScriptedProcess(0, self.polls)
        else:
            (opt_ml / "output" / "failure").write_text(self.failure)
            log_file.write_text(f"Training failed: {self.failure}\n")
            process = ScriptedProcess(1, self.polls)
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        for container, process in self.processes.items():
            if container == name:
                process.killed = True


# -- the harness -------------------------------------------------------------------------------------------------
@dataclass
class Lambdas:
    cloud: Any  # LocalCloud
    emulated: Emulated
    training: ScriptedTraining
    sagemaker: LocalSageMaker
    codepipeline: LocalCodePipeline
    events: list[dict[str, Any]]
    data_bucket: str
    model_bucket: str
    table: str
    topic_arn: str
    inbox: str
    idempotency_table: str
    sagemaker_role_arn: str  # the training jobs' execution role, from the template
    data_versions: dict[str, str]  # the data objects (not the folder markers) -> version id
    environments: dict[str, dict[str, str]]  # handler -> the function's environment in this test
    registry: LocalModelRegistry
    group: str  # this test's model package group
    package_events: list[dict[str, Any]]  # Model Package State Change events not yet delivered
    functions: dict[str, Any] = field(default_factory=dict)  # handler -> a function of another deployment

    def function(self, spec: FunctionSpec) -> Any:
        return self.functions.get(spec.handler) or self.cloud.deployment.function(spec.handler)

    def use_tuning(self, tuning_deployment: Any) -> dict[str, Any]:
        """start-training as the stack deploys it with `tuning` on: that variant's role (which may create
        tuning jobs) and its TRAINING_CONFIG's tuning; returns the tuning config."""
        function = tuning_deployment.function(START_TRAINING.handler)
        self.functions[START_TRAINING.handler] = function
        tuning = json.loads(function.environment["TRAINING_CONFIG"])["tuning"]
        config = json.loads(self.env(START_TRAINING)["TRAINING_CONFIG"])
        self.env(START_TRAINING)["TRAINING_CONFIG"] = json.dumps({**config, "tuning": tuning})
        return tuning

    def env(self, spec: FunctionSpec) -> dict[str, str]:
        return self.environments[spec.handler]

    @contextmanager
    def as_function(self, spec: FunctionSpec) -> Iterator[None]:
        """Code in the block runs as one invocation of `spec` would: its environment, role and endpoint."""
        with self.cloud.as_function(self.function(spec), self.env(spec)):
            yield

    def invoke(self, spec: FunctionSpec, event: Any, request_id: str | None = None) -> Any:
        from mlpipe.local.lambda_runtime import load_handler

        context = LambdaContext(
            function_name=spec.construct_id, aws_request_id=request_id or str(uuid.uuid4()), region=REGION
        )
        with self.as_function(spec):
            return load_handler(spec.handler)(event, context)

    def start(self, event: Any, request_id: str | None = None) -> Any:
        return self.invoke(START_TRAINING, event, request_id)

    def record(self, event: Any, request_id: str | None = None) -> Any:
        return self.invoke(RECORD_STATUS, event, request_id)

    def trigger(self, event: Any, request_id: str | None = None) -> Any:
        return self.invoke(DATA_TRIGGER, event, request_id)

    def record_approval(self, event: Any, request_id: str | None = None) -> Any:
        return self.invoke(RECORD_APPROVAL, event, request_id)

    def deliver_package_events(self) -> list[Any]:
        results = []
        while self.package_events:
            results.append(self.record_approval(self.package_events.pop(0)))
        return results

    def set_env(self, spec: FunctionSpec, **variables: str) -> None:
        self.environments[spec.handler] = {**self.environments[spec.handler], **variables}

    def deliver_events(self) -> None:
        while self.events:
            self.record(self.events.pop(0))

    def job_definition(self) -> dict[str, Any]:
        """What the start-training handler would send for a one-host job on the sample data (a new dict)."""
        return {
            "AlgorithmSpecification": {
                "TrainingImage": IMAGE_URI,
                "TrainingInputMode": "File",
                "MetricDefinitions": metrics.metric_definitions(METRIC_NAMES),
            },
            "RoleArn": self.sagemaker_role_arn,
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": f"s3://{self.data_bucket}/datasets/train/",
                        }
                    },
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.model_bucket}/models/"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        }

    def finished_job(
        self,
        name: str,
        status: str = "Completed",
        trained_seconds: int = 754,
        spot_billable_seconds: int | None = None,
    ) -> None:
        """A job SageMaker finished with `status` (restored into the local SageMaker: no container, no S3),
        its times on the sample events' clock (T0); with `spot_billable_seconds`, a managed spot job billed
        that long."""
        request = {
            "TrainingJobName": name,
            **self.job_definition(),
            "HyperParameters": {"max_depth": "6", "eta": "0.2"},
            "Tags": [{"Key": k, "Value": v} for k, v in default_tags(name).items()],
        }
        if spot_billable_seconds is not None:
            request["EnableManagedSpotTraining"] = True
            request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 7200
        job = LocalTrainingJob(
            request=request,
            arn=f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name.lower()}",
            workdir=Path("/nonexistent"),
            container_name="",
            created=T0,
            status=status,
            secondary_status="MaxRuntimeExceeded" if status == "Stopped" else status,
            failure_reason=f"AlgorithmError: {self.training.failure}" if status == "Failed" else None,
            started=T0 + timedelta(seconds=60),
            ended=T0 + timedelta(seconds=60 + trained_seconds),
            metrics=dict(self.training.metrics) if status == "Completed" else {},
            model_artifact=f"s3://{self.model_bucket}/models/{name}/output/model.tar.gz"
            if status == "Completed"
            else None,
            billable_seconds=spot_billable_seconds,
        )
        self.sagemaker.restore_job(job)

    def finished_tuning_job(self, name: str, trials: int = 2) -> list[str]:
        """A tuning job that ran `trials` trials with the scripted container (its own events dropped: tests
        send events built from the published samples) and ended; returns the trials' names."""
        template = self.job_definition()
        self.sagemaker.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name,
            HyperParameterTuningJobConfig={
                "Strategy": "Random",
                "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": 1},
                "ParameterRanges": {
                    "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "8"}]
                },
            },
            TrainingJobDefinition={**template, "StaticHyperParameters": {"eta": "0.2"}},
            Tags=[{"Key": k, "Value": v} for k, v in {**default_tags(name), "tuning-job": name}.items()],
        )
        self.sagemaker.tuning.wait(name)
        self.events.clear()
        return list(self.sagemaker.tuning.job(name).trials)

    def job_name(self, execution_id: str) -> str:
        return f"{PREFIX}{execution_id}"

    def run_action(
        self,
        parameters: dict[str, str],
        execution_id: str,
        max_jobs: int = 20,
        spec: FunctionSpec = START_TRAINING,
    ) -> Any:
        """An action as CodePipeline runs it: a job, a continuation job after each token, until a final
        result. State-change events go to record-status after each invocation."""
        for _ in range(max_jobs):
            event = self.codepipeline.new_job(execution_id, spec.construct_id, parameters)
            self.invoke(spec, event)
            self.deliver_events()
            result = self.codepipeline.result(event["CodePipeline.job"]["id"])
            assert result is not None, "the invocation reported no result"
            if not result.succeeded or not result.continuation_token:
                return result
        pytest.fail(f"the action did not finish within {max_jobs} jobs")

    def run_pipeline(self, metrics: dict[str, float] | None = None, commit: str | None = None) -> PipelineRun:
        """One execution through Train, Evaluate and (if the gate passes) Register, as the pipeline runs
        them; then the registry's events are delivered to record-approval, as EventBridge would."""
        if metrics is not None:
            self.training.metrics = dict(metrics)
        execution = self.codepipeline.start_execution("StartPipelineExecution", "test")
        # Each execution stands for a new model, so a new build: its own image digest keeps the training
        # cache from reusing an earlier run here (tests/lambdas/test_training_cache.py covers reuse).
        digest = "sha256:" + hashlib.sha256(execution.encode()).hexdigest()
        origin = user_parameters(execution, image_digest=digest, **({"commit_id": commit} if commit else {}))
        train = self.run_action(origin, execution)
        assert train.succeeded, train.failure_message
        name = train.output_variables["TRAINING_JOB_NAME"]
        evaluate = self.run_action(
            {"training_job_name": name, "pipeline_execution_id": execution}, execution, spec=EVALUATE_MODEL
        )
        register = None
        if evaluate.succeeded:
            parameters = {k: v for k, v in origin.items() if k != "trigger"}
            parameters.update(
                training_job_name=name,
                model_artifact=train.output_variables["MODEL_ARTIFACT"],
                evaluation_uri=evaluate.output_variables["EVALUATION_URI"],
            )
            register = self.run_action(parameters, execution, spec=REGISTER_MODEL)
        self.deliver_package_events()
        return PipelineRun(execution, name, train, evaluate, register, digest)

    def approver(self, name: str = "approver-alice") -> Credentials:
        """A person allowed to decide on packages (an IAM user in the local AWS)."""
        return self.cloud.user(f"{name}-{uuid.uuid4().hex[:6]}", APPROVER_ACTIONS)

    def sagemaker_as(self, credentials: Credentials) -> Any:
        """A SageMaker client of someone other than the pipeline, through the gateway (the registry stand-in)."""
        return credentials.session(REGION).client("sagemaker", endpoint_url=self.cloud.gateway.url)

    def record_of(self, name: str) -> dict[str, Any]:
        record = self.emulated.get_record(self.table, name)
        assert record is not None, f"no record for {name}"
        return record


@dataclass
class PipelineRun:
    execution_id: str
    job_name: str
    train: Any  # JobResult of each action
    evaluate: Any
    register: Any | None
    image_digest: str  # the build's: each execution is a new one


@dataclass
class VirtualBackoff:
    """botocore's retry delays, added up instead of slept: the retry logic and counts stay botocore's own."""

    seconds: float = 0.0

    def sleep(self, delay: float) -> None:
        self.seconds += delay


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> VirtualBackoff:
    import types

    import botocore.endpoint

    virtual = VirtualBackoff()
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=virtual.sleep))
    return virtual


@pytest.fixture
def training() -> ScriptedTraining:
    return ScriptedTraining()


@pytest.fixture
def lambdas(
    local_cloud: Any, emulated: Emulated, training: ScriptedTraining, tmp_path: Path
) -> Iterator[Lambdas]:
    data_bucket = emulated.data_bucket(versioned=True)
    versions = emulated.put_objects(
        data_bucket,
        {
            "datasets/train/part-0.csv": b"y,x1\n1,2\n",
            "datasets/train/part-1.csv": b"y,x1\n3,4\n",
            "datasets/validation/val.csv": b"y,x1\n5,6\n",
        },
    )
    emulated.put_objects(data_bucket, {"datasets/train/": b"", "datasets/validation/": b""})  # folder markers
    model_bucket = emulated.data_bucket(versioned=True)
    table = emulated.audit_table()
    topic_arn, inbox = emulated.topic_with_inbox()
    idempotency = emulated.idempotency_table()
    events: list[dict[str, Any]] = []
    sagemaker = LocalSageMaker(
        s3_as_role=local_cloud.s3_as_role,
        workdir=tmp_path / "jobs",
        start_container=training.start,
        stop_container=training.stop,
        on_state_change=events.append,
        region=REGION,
        # Multi-host jobs get a private network; scripted hosts need none, so these only record it.
        create_network=training.networks.append,
        remove_network=training.networks.remove,
    )
    codepipeline = LocalCodePipeline(PIPELINE_NAME, {"TRIGGER": "push", "DATA_CHANGE": "none"})
    package_events: list[dict[str, Any]] = []
    registry = LocalModelRegistry(REGION, package_events.append)
    local_cloud.add_service(sagemaker)
    local_cloud.add_service(registry)
    local_cloud.add_service(codepipeline)
    group = unique_name("models")
    local_cloud.client("sagemaker").create_model_package_group(ModelPackageGroupName=group)
    deployment = local_cloud.deployment
    sagemaker_role = deployment.resource(deployment.pipeline, "AWS::IAM::Role", "SageMakerExecution").arn
    common = {"PROJECT_NAME": "mlpipe", "ENV_NAME": "test", "PIPELINE_NAME": PIPELINE_NAME}
    environments = {
        START_TRAINING.handler: {
            **common,
            "AUDIT_TABLE_NAME": table,
            "DATA_BUCKET": data_bucket,
            "DATA_PREFIX": "datasets/",
            "MODEL_BUCKET": model_bucket,
            "MODEL_PREFIX": "models/",
            "CHECKPOINT_PREFIX": "checkpoints/",
            "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
            "SAGEMAKER_ROLE_ARN": sagemaker_role,
            "JOB_NAME_PREFIX": PREFIX,
            "TRAINING_CONFIG": json.dumps(TRAINING_CONFIG),
        },
        RECORD_STATUS.handler: {
            **common,
            "AUDIT_TABLE_NAME": table,
            "TOPIC_ARN": topic_arn,
            "JOB_NAME_PREFIX": PREFIX,
            "IDEMPOTENCY_TABLE_NAME": idempotency,
        },
        DATA_TRIGGER.handler: {
            **common,
            "DATA_BUCKET": "data-bucket",
            "DATA_PREFIX": "datasets/",
            "IDEMPOTENCY_TABLE_NAME": idempotency,
        },
        EVALUATE_MODEL.handler: {
            **common,
            "AUDIT_TABLE_NAME": table,
            "TOPIC_ARN": topic_arn,
            "MODEL_BUCKET": model_bucket,
            "MODEL_PREFIX": "models/",
            "MODEL_PACKAGE_GROUP_NAME": group,
            "JOB_NAME_PREFIX": PREFIX,
            "QUALITY_GATE": json.dumps(QUALITY_GATE),
        },
        REGISTER_MODEL.handler: {
            **common,
            "AUDIT_TABLE_NAME": table,
            "TOPIC_ARN": topic_arn,
            "MODEL_PACKAGE_GROUP_NAME": group,
            "JOB_NAME_PREFIX": PREFIX,
            "REGISTRY_CONFIG": json.dumps(REGISTRY_CONFIG),
        },
        RECORD_APPROVAL.handler: {
            **common,
            "AUDIT_TABLE_NAME": table,
            "TOPIC_ARN": topic_arn,
            "MODEL_PACKAGE_GROUP_NAME": group,
            "IDEMPOTENCY_TABLE_NAME": idempotency,
        },
    }
    # The handlers' clients reach the gateway in this process (no socket): the same routing, IAM and
    # stand-ins, three times faster per call; the local run and the e2e tests go over HTTP.
    with aws.client_hooks(local_cloud.gateway.install_direct_transport):
        yield Lambdas(
            cloud=local_cloud,
            emulated=emulated,
            training=training,
            sagemaker=sagemaker,
            codepipeline=codepipeline,
            events=events,
            data_bucket=data_bucket,
            model_bucket=model_bucket,
            table=table,
            topic_arn=topic_arn,
            inbox=inbox,
            idempotency_table=idempotency,
            sagemaker_role_arn=sagemaker_role,
            data_versions=versions,
            environments=environments,
            registry=registry,
            group=group,
            package_events=package_events,
        )


# -- the deploy half: start-deploy, deploy-model, golden-test, record-deployment ------------------------------
DEPLOY_PIPELINE_NAME = "mlpipe-test-deploy"
DEPLOY_PROJECT, DEPLOY_ENV = "mlpipe", "test"


class SumModel:
    """A model server with the container's /invocations contract: each CSV row's prediction is the sum of
    its features (so a golden set can be written for it)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                rows = self.rfile.read(int(self.headers["Content-Length"])).decode().split()
                body = "".join(f"{sum(map(float, r.split(',')))}\n" for r in rows).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class DeployLambdas:
    """The deploy stack's handlers, each invoked under its own role from the synthesized template (or a
    function of another deployment, `functions`), with SageMaker hosting (`LocalEndpoints`), the registry,
    the alarm history, Application Auto Scaling and the deploy pipeline as stand-ins behind the gateway,
    and the staging API (`LocalInferenceApi`) in front of a `SumModel`."""

    cloud: Any  # LocalCloud
    emulated: Emulated
    registry: LocalModelRegistry
    endpoints: Any  # LocalEndpoints
    codepipeline: LocalCodePipeline
    group: str
    table: str
    topic_arn: str
    inbox: str
    bucket: str
    staging_api: Any  # LocalInferenceApi
    environments: dict[str, dict[str, str]]
    events: list[dict[str, Any]] = field(default_factory=list)  # endpoint/transform state changes
    bad_versions: dict[int, str] = field(default_factory=dict)  # version -> the alarm its canary fires
    functions: dict[str, Any] = field(default_factory=dict)  # handler -> a function of another deployment

    def function(self, spec: FunctionSpec) -> Any:
        return self.functions.get(spec.handler) or self.cloud.deployment.function(spec.handler)

    def invoke(self, spec: FunctionSpec, event: Any, request_id: str | None = None) -> Any:
        from mlpipe.local.lambda_runtime import load_handler

        context = LambdaContext(
            function_name=spec.construct_id, aws_request_id=request_id or str(uuid.uuid4()), region=REGION
        )
        with self.cloud.as_function(self.function(spec), self.environments[spec.handler]):
            return load_handler(spec.handler)(event, context)

    def package(self, job: str, approve: bool = True) -> str:
        """A registered package of `job`, its audit record and its golden set (for the `SumModel`)."""
        from tests.lambdas.builders import deployable_package, golden_archive

        rows = ["1.0,2.0", "3.0,4.0", "5.0,6.0"]
        golden = {"content_type": "text/csv", "rows": rows, "predictions": [3.0, 7.0, 11.0]}
        self.emulated.put_objects(self.bucket, {f"models/{job}/output/output.tar.gz": golden_archive(golden)})
        return deployable_package(
            self.emulated, self.registry, self.group, self.table, self.bucket, job, approve
        )

    def approval_event(self, arn: str, event_id: str | None = None) -> dict[str, Any]:
        from tests.lambdas.builders import model_package_event

        version = int(arn.rsplit("/", 1)[1])
        event = model_package_event(self.group, version, "Approved", T0)
        if event_id:
            event["id"] = event_id
        return event

    def run_action(self, spec: FunctionSpec, execution: str, parameters: dict[str, str]) -> Any:
        """One Lambda invoke action as CodePipeline runs it (a new job per continuation) until its result."""
        for _ in range(100):
            event = self.codepipeline.new_job(execution, spec.construct_id, parameters)
            job_id = event["CodePipeline.job"]["id"]
            self.invoke(spec, event)
            self.deliver_events()
            result = self.codepipeline.result(job_id)
            if result is None or not result.succeeded or not result.continuation_token:
                return result
        raise AssertionError(f"{spec.construct_id} never ended its action")

    def deliver_events(self) -> None:
        from stacks.functions import RECORD_DEPLOYMENT

        while self.events:
            self.invoke(RECORD_DEPLOYMENT, self.events.pop(0))

    def record(self, job: str) -> dict[str, Any]:
        return self.emulated.get_record(self.table, job) or {}

    def emails(self) -> list[dict[str, Any]]:
        return self.emulated.read_inbox(self.inbox)


@pytest.fixture
def deploy_lambdas(local_cloud: Any, emulated: Emulated) -> Iterator[DeployLambdas]:
    from pipeline_common import endpoints

    from mlpipe.local.api import LocalInferenceApi
    from mlpipe.local.endpoints import LocalAlarmHistory, LocalAutoscaling, LocalEndpoints
    from stacks.functions import DEPLOY_MODEL, GOLDEN_TEST, RECORD_DEPLOYMENT, START_DEPLOY
    from tests.lambdas.test_deploy import DEPLOY_CONFIG

    group = unique_name("group")
    topic_arn, inbox = emulated.topic_with_inbox()
    table, bucket = emulated.audit_table(), emulated.data_bucket()
    registry = LocalModelRegistry(REGION, on_state_change=lambda event: None)
    registry.call("CreateModelPackageGroup", {"ModelPackageGroupName": group})
    holder: dict[str, DeployLambdas] = {}
    local = LocalEndpoints(
        REGION,
        alarm_check=lambda endpoint, config: holder["d"].bad_versions.get(
            endpoints.version_of_config(config) or 0
        ),
        on_event=lambda event: holder["d"].events.append(event),
    )
    codepipeline = LocalCodePipeline(DEPLOY_PIPELINE_NAME, {"PACKAGE_ARN": "none"})
    for stand_in in (registry, local, LocalAlarmHistory(local), LocalAutoscaling(), codepipeline):
        local_cloud.add_service(stand_in)
    model = SumModel()
    staging = endpoints.endpoint_name(DEPLOY_PROJECT, DEPLOY_ENV, endpoints.STAGING)
    api = LocalInferenceApi(
        staging,
        backends=lambda config: model.url,
        weights=lambda: {"any": 1.0},
        secret_of=local_cloud.secret_of,
        may_invoke=lambda key: local_cloud.permissions.allows(key, "execute-api:Invoke"),
        region=REGION,
    )
    deployment = local_cloud.deployment
    endpoint_role = deployment.resource(deployment.deploy, "AWS::IAM::Role", "EndpointExecution").arn
    common = {
        "PROJECT_NAME": DEPLOY_PROJECT,
        "ENV_NAME": DEPLOY_ENV,
        "PIPELINE_NAME": DEPLOY_PIPELINE_NAME,
        "AUDIT_TABLE_NAME": table,
        "TOPIC_ARN": topic_arn,
        "MODEL_PACKAGE_GROUP_NAME": group,
    }
    with api.running() as url, aws.client_hooks(local_cloud.gateway.install_direct_transport):
        environments = {
            START_DEPLOY.handler: {
                **common,
                "DEPLOY_PIPELINE_NAME": DEPLOY_PIPELINE_NAME,
                "REQUEST_BUCKET": bucket,
                "REQUEST_KEY": endpoints.DEPLOY_REQUEST_KEY,
            },
            DEPLOY_MODEL.handler: {
                **common,
                "DEPLOY_PIPELINE_NAME": DEPLOY_PIPELINE_NAME,
                "DEPLOY_CONFIG": json.dumps(DEPLOY_CONFIG),
                "ENDPOINT_ROLE_ARN": endpoint_role,
                "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
                "CAPTURE_URI": f"s3://{bucket}/data-capture/",
                "DATA_BUCKET": bucket,
                "MODEL_BUCKET": bucket,
            },
            GOLDEN_TEST.handler: {
                **common,
                "DEPLOY_PIPELINE_NAME": DEPLOY_PIPELINE_NAME,
                "MODEL_BUCKET": bucket,
                "MODEL_PREFIX": "models/",
                "STAGING_API_URL": url,
                "DEPLOY_CONFIG": json.dumps(DEPLOY_CONFIG),
            },
            RECORD_DEPLOYMENT.handler: dict(common),
        }
        holder["d"] = DeployLambdas(
            cloud=local_cloud,
            emulated=emulated,
            registry=registry,
            endpoints=local,
            codepipeline=codepipeline,
            group=group,
            table=table,
            topic_arn=topic_arn,
            inbox=inbox,
            bucket=bucket,
            staging_api=api,
            environments=environments,
        )
        try:
            yield holder["d"]
        finally:
            model.close()
