"""A local stand-in for the SageMaker training API, used by `mlpipe-local-run` and the tests.

It takes the same requests the start-training Lambda sends to SageMaker (through the local gateway, which
checks the caller's IAM actions; validated here against botocore's service model), runs the training image
in a local container with SageMaker's /opt/ml layout, and answers DescribeTrainingJob like the service:
status, secondary status, failure reason from /opt/ml/output/failure, final metrics scraped from the logs
with the job's own MetricDefinitions, and the model packaged as model.tar.gz in the job's S3 output path.
Like SageMaker, it reads the channels and writes the model as the job's execution role (`s3_as_role`),
so that role's permissions are enforced too.

Every state change is reported as a "SageMaker Training Job State Change" event shaped like AWS's
published sample (tests/fixtures/aws_samples): times as strings of epoch milliseconds, tags as a map,
no final metrics or billable time, and a FailureReason only when the job Failed.

Hyperparameter tuning jobs are `mlpipe.local.tuning`: their trials are this class's training jobs.

A job with `InstanceCount` N > 1 runs N containers, as SageMaker (and the SageMaker SDK's local mode) does:
hosts `algo-1`..`algo-N` on a private container network of their own (which replaces `--network none`), each
with its own /opt/ml tree and `resourceconfig.json`. The train channel's files go to every host
(FullyReplicated) or, with ShardedByS3Key, by key to one host each (sorted keys, round-robin); other channels
to every host. The job ends when every host has; it Failed if any host failed, with the first host's failure
reason (the leader names the host that caused a distributed failure), else the failed host's.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import botocore.session
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters
from pipeline_common.audit import TERMINAL_STATUSES
from pipeline_common.metrics import apply_definitions
from sagemaker_contract.paths import OptMl

from mlpipe.local.emulator import ACCOUNT
from mlpipe.local.store import StateStore, json_safe
from mlpipe.local.tuning import LocalTuning

logger = logging.getLogger(__name__)

# SageMaker truncates FailureReason to 1,024 characters.
MAX_FAILURE_REASON = 1024

StartContainer = Callable[..., subprocess.Popen]
"""(image, opt_ml_dir, container_name, log_file) -> a running `train` container process; for a host of a
multi-host job also the keywords network, hostname and env (mlpipe.local.containers.start_training_container)."""
NetworkControl = Callable[[str], None]
"""network name -> None: create (or remove) a private container network."""
# A multi-host job's hosts share this machine's cores: OpenMP's spinning waits would starve the other hosts.
SHARED_CORES_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# After one host of a multi-host job failed, how long the others get to end on their own (the leader
# writes the reason that names the failed host) before their containers are stopped, as SageMaker does.
HOST_FAILURE_GRACE_SECONDS = 30
StopContainer = Callable[[str], None]
StateChangeListener = Callable[[dict[str, Any]], None]
S3ForRole = Callable[[str], Any]
"""role ARN -> an S3 client with that role's credentials."""

# The event's detail: DescribeTrainingJob's fields that EventBridge's schema for this event carries.
EVENT_DETAIL_FIELDS = (
    "TrainingJobName",
    "TrainingJobArn",
    "TrainingJobStatus",
    "SecondaryStatus",
    "HyperParameters",
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "CreationTime",
    "TrainingStartTime",
    "TrainingEndTime",
    "LastModifiedTime",
    "SecondaryStatusTransitions",
    "ModelArtifacts",
)


@functools.cache
def _service_model() -> Any:
    """SageMaker's model is a 3 MB JSON document: load it once, not per request."""
    return botocore.session.get_session().get_service_model("sagemaker")


def _service_model_shape(operation: str) -> Any:
    return _service_model().operation_model(operation).input_shape


def _client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def check_name(request: dict[str, Any], member: str, operation: str) -> None:
    """What the service checks and botocore's client-side validation does not: a name's maximum length and
    pattern (32 characters for a tuning job, 63 for a training job), answered as SageMaker answers them."""
    import re

    shape = _service_model_shape(operation).members[member]
    value = request[member]
    limit, pattern = shape.metadata.get("max"), shape.metadata.get("pattern")
    if limit is not None and len(value) > limit:
        raise _client_error(
            "ValidationException",
            f"1 validation error detected: Value '{value}' at '{member[0].lower() + member[1:]}' failed to "
            f"satisfy constraint: Member must have length less than or equal to {limit}",
            operation,
        )
    if pattern and not re.fullmatch(pattern, value):
        raise _client_error(
            "ValidationException",
            f"1 validation error detected: Value '{value}' failed to satisfy constraint: Member must satisfy "
            f"regular expression pattern: {pattern}",
            operation,
        )


@dataclass
class LocalTrainingJob:
    request: dict[str, Any]
    arn: str
    workdir: Path
    container_name: str
    created: datetime
    status: str = "InProgress"
    secondary_status: str = "Starting"
    failure_reason: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    process: subprocess.Popen | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_artifact: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    tuning_job_arn: str | None = None  # the tuning job that launched it (a trial)
    # What SageMaker billed, when a harness restores a finished spot job (locally there is no spot market:
    # a job run here is billed for all its training time).
    billable_seconds: int | None = None
    # Hosts algo-2..N of a multi-host job (algo-1 is this job's own opt_ml, container and log).
    extra_hosts: list[LocalHost] = field(default_factory=list)
    network: str | None = None
    first_failure: float | None = None  # monotonic time a host first exited non-zero

    @property
    def name(self) -> str:
        return self.request["TrainingJobName"]

    @property
    def opt_ml(self) -> Path:
        return self.workdir / "opt_ml"

    @property
    def layout(self) -> OptMl:
        """The /opt/ml tree as the container's own contract code names it (one definition of it)."""
        return OptMl(self.opt_ml)

    @property
    def log_file(self) -> Path:
        return self.workdir / "train.log"


@dataclass
class LocalHost:
    """One more host of a multi-host job: its own /opt/ml, container and log."""

    name: str
    workdir: Path
    container_name: str
    process: subprocess.Popen | None = None

    @property
    def opt_ml(self) -> Path:
        return self.workdir / "opt_ml"

    @property
    def log_file(self) -> Path:
        return self.workdir / "train.log"


class LocalSageMaker:
    """Implements the SageMaker calls the pipeline's Lambdas make, backed by local containers."""

    signing_name = "sagemaker"

    def __init__(
        self,
        s3_as_role: S3ForRole,
        workdir: Path,
        start_container: StartContainer,
        stop_container: StopContainer,
        on_state_change: StateChangeListener,
        region: str,
        account: str = ACCOUNT,
        note: Callable[[str], None] | None = None,
        store: StateStore | None = None,
        create_network: NetworkControl | None = None,
        remove_network: NetworkControl | None = None,
    ) -> None:
        self._create_network = create_network
        self._remove_network = remove_network
        self._s3_as_role = s3_as_role
        self._workdir = workdir
        self._start_container = start_container
        self._stop_container = stop_container
        self._on_state_change = on_state_change
        self._region = region
        self._account = account
        self._jobs: dict[str, LocalTrainingJob] = {}
        # Jobs that ended in an earlier session against the same emulator (with a `store`): SageMaker keeps
        # describing a job after it ended, so a later run's Evaluate of a reused model finds it.
        self._store = store
        self._ended: dict[str, dict[str, Any]] = (
            (store.load() or {}).get("training_jobs", {}) if store else {}
        )
        self._lock = threading.Lock()
        self.tuning = LocalTuning(self, note or logger.info)

    @property
    def region(self) -> str:
        return self._region

    @property
    def account(self) -> str:
        return self._account

    @property
    def arn_prefix(self) -> str:
        return f"arn:aws:sagemaker:{self._region}:{self._account}"

    def emit(self, event: dict[str, Any]) -> None:
        """Deliver a state-change event, as EventBridge would."""
        self._on_state_change(event)

    # -- LocalService: what the gateway calls ------------------------------------------------------------
    OPERATIONS: ClassVar[dict[str, str]] = {
        "CreateTrainingJob": "create_training_job",
        "DescribeTrainingJob": "describe_training_job",
        "StopTrainingJob": "stop_training_job",
        "ListTags": "list_tags",
        "CreateHyperParameterTuningJob": "create_hyper_parameter_tuning_job",
        "DescribeHyperParameterTuningJob": "describe_hyper_parameter_tuning_job",
        "ListTrainingJobsForHyperParameterTuningJob": "list_training_jobs_for_hyper_parameter_tuning_job",
        "StopHyperParameterTuningJob": "stop_hyper_parameter_tuning_job",
    }

    def implements(self, operation: str) -> bool:
        return operation in self.OPERATIONS

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        """What AWS checks besides the operation's own action."""
        needed = []
        if operation in ("CreateTrainingJob", "CreateHyperParameterTuningJob"):
            needed.append("iam:PassRole")  # the execution role is passed to SageMaker
            if params.get("Tags"):
                needed.append("sagemaker:AddTags")  # tags on create need AddTags
        return needed

    def call(self, operation: str, params: dict[str, Any], principal: str = "") -> dict[str, Any]:
        validate_parameters(params, _service_model_shape(operation))
        return getattr(self, self.OPERATIONS[operation])(**params)

    # -- SageMaker API ---------------------------------------------------------------------------------
    def create_training_job(self, **request: Any) -> dict[str, Any]:
        return self.create_trial(request, tuning_job_arn=None)

    def create_trial(self, request: dict[str, Any], tuning_job_arn: str | None) -> dict[str, Any]:
        """A training job; with `tuning_job_arn`, one a tuning job launched (no caller IAM check: the
        tuning job launches it, as in SageMaker)."""
        validate_parameters(request, _service_model_shape("CreateTrainingJob"))
        check_name(request, "TrainingJobName", "CreateTrainingJob")
        name = request["TrainingJobName"]
        with self._lock:
            if name in self._jobs or name in self._ended:
                # What real SageMaker does for a duplicate name (moto wrongly accepts it).
                raise _client_error(
                    "ResourceInUse", f"Training job {name} already exists", "CreateTrainingJob"
                )
            job = LocalTrainingJob(
                request=request,
                arn=f"arn:aws:sagemaker:{self._region}:{self._account}:training-job/{name.lower()}",
                workdir=self._workdir / name,
                container_name=f"local-train-{name.lower()}-{uuid.uuid4().hex[:6]}",
                created=datetime.now(UTC),
                tuning_job_arn=tuning_job_arn,
            )
            self._jobs[name] = job
        self._transition(job, "InProgress", "Starting", "Preparing the instances for training")
        try:
            self._prepare(job)
            self._transition(job, "InProgress", "Training", "Training image download completed")
            job.started = datetime.now(UTC)
            self._start_hosts(job)
        except Exception as error:  # any set-up failure is the job's failure, as in SageMaker
            self._finish(job, "Failed", f"ClientError: {error}")
        return {"TrainingJobArn": job.arn}

    def describe_training_job(self, TrainingJobName: str) -> dict[str, Any]:  # boto3's parameter name
        if TrainingJobName not in self._jobs and TrainingJobName in self._ended:
            return copy.deepcopy(self._ended[TrainingJobName]["description"])
        job = self._job(TrainingJobName, "DescribeTrainingJob")
        self._poll(job)
        return self._describe(job)

    def create_hyper_parameter_tuning_job(self, **request: Any) -> dict[str, Any]:
        return self.tuning.create(request)

    def describe_hyper_parameter_tuning_job(self, HyperParameterTuningJobName: str) -> dict[str, Any]:
        return self.tuning.describe(HyperParameterTuningJobName)

    def list_training_jobs_for_hyper_parameter_tuning_job(
        self, HyperParameterTuningJobName: str, **options: Any
    ) -> dict[str, Any]:
        return self.tuning.list_trials(HyperParameterTuningJobName, **options)

    def stop_hyper_parameter_tuning_job(self, HyperParameterTuningJobName: str) -> dict[str, Any]:
        return self.tuning.stop(HyperParameterTuningJobName)

    def list_tags(self, ResourceArn: str, **_: Any) -> dict[str, Any]:  # boto3's parameter name
        for job in [*self._jobs.values(), *self.tuning.jobs()]:
            if job.arn == ResourceArn:
                return {"Tags": list(job.request.get("Tags", []))}
        for ended in self._ended.values():
            if ended["description"]["TrainingJobArn"] == ResourceArn:
                return {"Tags": list(ended["tags"])}
        raise _client_error("ValidationException", f"Resource {ResourceArn} not found.", "ListTags")

    def stop_training_job(self, TrainingJobName: str) -> dict[str, Any]:  # boto3's parameter name
        job = self._job(TrainingJobName, "StopTrainingJob")
        if job.status == "InProgress":
            self._transition(job, "Stopping", "Stopping", "Stopping the training job")
            self._stop_hosts(job)
            self._finish(job, "Stopped", None)
        return {}

    def restore_job(self, job: LocalTrainingJob) -> None:
        """Add a job in a given state, as if SageMaker had run it (for harnesses that start from a finished
        job; no container, no S3)."""
        with self._lock:
            self._jobs[job.name] = job

    def job(self, name: str) -> LocalTrainingJob:
        """A job's full local state (its request, container, times), for the harness and tests."""
        return self._job(name, "DescribeTrainingJob")

    def wait(self, name: str, poll_seconds: float = 0.2) -> dict[str, Any]:
        """Block until the job ends (for callers that are not a CodePipeline continuation loop)."""
        while True:
            description = self.describe_training_job(TrainingJobName=name)
            if description["TrainingJobStatus"] in TERMINAL_STATUSES:
                return description
            time.sleep(poll_seconds)

    def stop_all(self) -> None:
        """Remove every job's container, running or ended (safe to call more than once)."""
        for job in list(self._jobs.values()):
            if job.process is not None:
                self._stop_hosts(job)

    # -- internals -------------------------------------------------------------------------------------
    def _job(self, name: str, operation: str) -> LocalTrainingJob:
        if name not in self._jobs:
            raise _client_error("ValidationException", "Requested resource not found.", operation)
        return self._jobs[name]

    def _prepare(self, job: LocalTrainingJob) -> None:
        """Lay out /opt/ml exactly as SageMaker does before it starts the container."""
        request, layout = job.request, job.layout
        layout.config_dir.mkdir(parents=True)
        layout.hyperparameters.write_text(json.dumps(request.get("HyperParameters", {})))
        input_config = {
            channel["ChannelName"]: {
                "ContentType": channel.get("ContentType", ""),
                "TrainingInputMode": channel.get(
                    "InputMode", request["AlgorithmSpecification"]["TrainingInputMode"]
                ),
                "S3DistributionType": channel["DataSource"]["S3DataSource"].get("S3DataDistributionType", ""),
                "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            }
            for channel in request.get("InputDataConfig", [])
        }
        layout.inputdataconfig.write_text(json.dumps(input_config))
        hosts = _host_names(request)
        layout.resourceconfig.write_text(
            json.dumps({"current_host": hosts[0], "hosts": hosts, "network_interface_name": "eth0"})
        )
        self._transition(job, "InProgress", "Downloading", "Downloading input data")
        s3 = self._s3_as_role(request["RoleArn"])
        for channel in request.get("InputDataConfig", []):
            self._download_channel(s3, channel, layout.channel(channel["ChannelName"]))
        for writable in (layout.model_dir, layout.output_dir, layout.output_data_dir, layout.checkpoint_dir):
            writable.mkdir(parents=True, exist_ok=True)
        self._lay_out_other_hosts(job, hosts)
        # SageMaker hands the container a writable /opt/ml. The container's root may be another host uid
        # (rootless engines map it), so the host folders are made writable by any uid.
        for root in [job.opt_ml, *(host.opt_ml for host in job.extra_hosts)]:
            for path in [root, *root.rglob("*")]:
                path.chmod(0o777 if path.is_dir() else 0o666)

    def _download_channel(self, s3: Any, channel: dict[str, Any], target: Path) -> None:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        target.mkdir(parents=True, exist_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :].lstrip("/")
                if not relative or relative.endswith("/"):
                    continue
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(destination))

    def _poll(self, job: LocalTrainingJob) -> None:
        if job.status not in ("InProgress", "Stopping") or job.process is None:
            return
        codes = [p.poll() for p in (job.process, *(h.process for h in job.extra_hosts)) if p is not None]
        if any(code is None for code in codes):
            limit = job.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
            if limit and job.started and (datetime.now(UTC) - job.started).total_seconds() > limit:
                self._stop_hosts(job)
                self._finish(job, "Stopped", "Training job reached its MaxRuntimeInSeconds and was stopped.")
                return
            if not any(code not in (None, 0) for code in codes):
                return
            # A host failed: the others get a grace to end on their own, then SageMaker stops them.
            job.first_failure = job.first_failure or time.monotonic()
            if time.monotonic() - job.first_failure < HOST_FAILURE_GRACE_SECONDS:
                return
        job.metrics = self._scrape_metrics(job)
        # SageMaker releases the instances when the job ends: nothing of an ended job keeps running here either.
        # The outcome is `codes` as read above, before the stop: a host still running when another failed is
        # stopped (None), not failed, and a stopped container's own code (137) is not the job's.
        self._stop_hosts(job)
        self._upload_output_data(job)
        if all(code == 0 for code in codes):
            self._transition(job, "InProgress", "Uploading", "Uploading generated training model")
            job.model_artifact = self._upload_model(job)
            self._finish(job, "Completed", None)
        else:
            self._finish(job, "Failed", self._failure_reason(job, codes))

    def _scrape_metrics(self, job: LocalTrainingJob) -> dict[str, float]:
        """Apply the job's own MetricDefinitions to its logs, as SageMaker does."""
        logs = job.log_file.read_text(errors="replace") if job.log_file.exists() else ""
        return apply_definitions(job.request["AlgorithmSpecification"].get("MetricDefinitions", []), logs)

    def _failure_reason(self, job: LocalTrainingJob, codes: list[int | None]) -> str:
        """algo-1's failure file (the leader names the host that caused a distributed failure), else the
        first failed host's, else the first failed host's exit code."""
        opt_mls = [job.opt_ml, *(host.opt_ml for host in job.extra_hosts)]
        names = _host_names(job.request)
        reason = ""
        for opt_ml, code in zip(opt_mls, codes, strict=False):
            failure_file = OptMl(opt_ml).failure_file
            if code not in (0, None) and failure_file.exists():
                reason = failure_file.read_text(errors="replace").strip()
                if reason:
                    break
        if not reason:
            failed = next((i for i, code in enumerate(codes) if code not in (0, None)), 0)
            where = f" of host {names[failed]}" if len(names) > 1 else ""
            reason = f"AlgorithmError: the training container{where} exited with code {codes[failed]}"
        elif not reason.startswith("AlgorithmError"):
            reason = f"AlgorithmError: {reason}"
        return reason[:MAX_FAILURE_REASON]

    # -- several hosts -----------------------------------------------------------------------------------
    def _lay_out_other_hosts(self, job: LocalTrainingJob, hosts: list[str]) -> None:
        """algo-2..N: a copy of algo-1's /opt/ml with its own resourceconfig.json; a ShardedByS3Key channel's
        files split by key across the hosts (algo-1 keeps its share)."""
        if len(hosts) == 1:
            return
        for name in hosts[1:]:
            host = LocalHost(name, job.workdir / name, f"{job.container_name}-{name}")
            shutil.copytree(job.opt_ml, host.opt_ml)
            OptMl(host.opt_ml).resourceconfig.write_text(
                json.dumps({"current_host": name, "hosts": hosts, "network_interface_name": "eth0"})
            )
            job.extra_hosts.append(host)
        for channel in job.request.get("InputDataConfig", []):
            if channel["DataSource"]["S3DataSource"].get("S3DataDistributionType") != "ShardedByS3Key":
                continue
            name = channel["ChannelName"]
            roots = [job.layout.channel(name), *(OptMl(h.opt_ml).channel(name) for h in job.extra_hosts)]
            keys = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
            for index, key in enumerate(keys):
                for rank, root in enumerate(roots):
                    if rank != index % len(roots):
                        (root / key).unlink()

    def _start_hosts(self, job: LocalTrainingJob) -> None:
        image = job.request["AlgorithmSpecification"]["TrainingImage"]
        if not job.extra_hosts:
            job.process = self._start_container(image, job.opt_ml, job.container_name, job.log_file)
            return
        if self._create_network is None:
            raise RuntimeError(
                f"InstanceCount {len(job.extra_hosts) + 1} needs a container network, and this local "
                "SageMaker has none"
            )
        job.network = f"{job.container_name}-net"
        self._create_network(job.network)
        hosts = [
            (job.opt_ml, job.container_name, job.log_file, "algo-1"),
            *((h.opt_ml, h.container_name, h.log_file, h.name) for h in job.extra_hosts),
        ]
        for opt_ml, container, log_file, hostname in hosts:
            process = self._start_container(
                image,
                opt_ml,
                container,
                log_file,
                network=job.network,
                hostname=hostname,
                env=SHARED_CORES_ENV,
            )
            if hostname == "algo-1":
                job.process = process
            else:
                next(h for h in job.extra_hosts if h.name == hostname).process = process

    def _stop_hosts(self, job: LocalTrainingJob) -> None:
        """Remove every host's container (running or ended), then the job's network."""
        for container, process in [
            (job.container_name, job.process),
            *((h.container_name, h.process) for h in job.extra_hosts),
        ]:
            if process is None:
                continue
            self._stop_container(container)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        if job.network is not None and self._remove_network is not None:
            self._remove_network(job.network)
            job.network = None

    def _upload_model(self, job: LocalTrainingJob) -> str:
        return self._upload_archive(job, job.layout.model_dir, "model.tar.gz")

    def _upload_output_data(self, job: LocalTrainingJob) -> None:
        """/opt/ml/output/data as `<S3OutputPath>/<job>/output/output.tar.gz`, as SageMaker uploads it when
        the container wrote something there (the contract's model-meta.json)."""
        data = job.layout.output_data_dir
        if data.is_dir() and any(data.iterdir()):
            self._upload_archive(job, data, "output.tar.gz")

    def _upload_archive(self, job: LocalTrainingJob, folder: Path, name: str) -> str:
        output_path = job.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        bucket, _, prefix = output_path.removeprefix("s3://").partition("/")
        key = "/".join(part for part in (prefix, job.name, "output", name) if part)
        archive = job.workdir / name
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        self._s3_as_role(job.request["RoleArn"]).upload_file(str(archive), bucket, key)
        return f"s3://{bucket}/{key}"

    def _finish(self, job: LocalTrainingJob, status: str, reason: str | None) -> None:
        job.ended = datetime.now(UTC)
        job.failure_reason = reason
        self._transition(job, status, status, reason or f"Training job {status.lower()}")
        if self._store is not None:
            with self._lock:
                self._ended[job.name] = {
                    "description": json_safe(self._describe(job)),
                    "tags": list(job.request.get("Tags", [])),
                }
                self._store.save({"training_jobs": self._ended})

    def _transition(self, job: LocalTrainingJob, status: str, secondary: str, message: str) -> None:
        now = datetime.now(UTC)
        if job.transitions and job.transitions[-1].get("EndTime") is None:
            job.transitions[-1]["EndTime"] = now
        job.transitions.append({"Status": secondary, "StartTime": now, "StatusMessage": message})
        primary_changed = status != job.status or not job.transitions[:-1]
        job.status, job.secondary_status = status, secondary
        if primary_changed:
            self._on_state_change(self._event(job))

    def _describe(self, job: LocalTrainingJob) -> dict[str, Any]:
        request = job.request
        description: dict[str, Any] = {
            "TrainingJobName": job.name,
            "TrainingJobArn": job.arn,
            "TrainingJobStatus": job.status,
            "SecondaryStatus": job.secondary_status,
            "HyperParameters": request.get("HyperParameters", {}),
            "AlgorithmSpecification": request["AlgorithmSpecification"],
            "RoleArn": request["RoleArn"],
            "InputDataConfig": request.get("InputDataConfig", []),
            "OutputDataConfig": request["OutputDataConfig"],
            "ResourceConfig": request["ResourceConfig"],
            "StoppingCondition": request["StoppingCondition"],
            "CreationTime": job.created,
            "LastModifiedTime": datetime.now(UTC),
            "SecondaryStatusTransitions": job.transitions,
            "EnableManagedSpotTraining": request.get("EnableManagedSpotTraining", False),
            "ModelArtifacts": {"S3ModelArtifacts": job.model_artifact or ""},
        }
        if "CheckpointConfig" in request:
            description["CheckpointConfig"] = request["CheckpointConfig"]
        if job.tuning_job_arn:
            description["TuningJobArn"] = job.tuning_job_arn
        if job.failure_reason:
            description["FailureReason"] = job.failure_reason
        if job.started:
            description["TrainingStartTime"] = job.started
        if job.ended:
            description["TrainingEndTime"] = job.ended
            seconds = max(1, round((job.ended - (job.started or job.created)).total_seconds()))
            description["TrainingTimeInSeconds"] = seconds
            description["BillableTimeInSeconds"] = (
                job.billable_seconds if job.billable_seconds is not None else seconds
            )
        if job.metrics:
            description["FinalMetricDataList"] = [
                {"MetricName": name, "Value": value, "Timestamp": job.ended or datetime.now(UTC)}
                for name, value in job.metrics.items()
            ]
        return description

    def _event(self, job: LocalTrainingJob) -> dict[str, Any]:
        """The state-change event as EventBridge delivers it (see the module docstring)."""
        description = self._describe(job)
        detail = {
            name: _as_event_value(description[name]) for name in EVENT_DETAIL_FIELDS if name in description
        }
        if job.status == "Failed" and job.failure_reason:
            detail["FailureReason"] = job.failure_reason
        detail["Tags"] = {tag["Key"]: tag["Value"] for tag in job.request.get("Tags", [])}
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "SageMaker Training Job State Change",
            "source": "aws.sagemaker",
            "account": self._account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [job.arn],
            "detail": detail,
        }


def _host_names(request: dict[str, Any]) -> list[str]:
    """SageMaker's host names for the job's instances: algo-1 .. algo-N."""
    return [f"algo-{i + 1}" for i in range(int(request["ResourceConfig"].get("InstanceCount", 1)))]


def _as_event_value(value: Any) -> Any:
    """Times as the published sample gives them: strings of epoch milliseconds."""
    if isinstance(value, datetime):
        return str(int(value.timestamp() * 1000))
    if isinstance(value, dict):
        return {k: _as_event_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_event_value(v) for v in value]
    return value
