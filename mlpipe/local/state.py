"""What the local run's stages hand each other: the options and everything a stage has made so far."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe.local.console import StageFailed

REGION = "us-east-1"


@dataclass(frozen=True)
class Options:
    """The command line, parsed (see `mlpipe.local.cli`)."""

    data: Path
    output: Path
    env: str | None = None
    hyperparameter_overrides: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None
    context: tuple[str, ...] = ()
    poll_seconds: float = 1.0
    faults_seed: int | None = None  # seeded transient faults on the handlers' AWS calls
    approve: bool = False  # approve the registered package as a named local IAM user
    approval_wait: float = 0.0  # seconds to wait for an approval made from another terminal
    retrain: bool = False  # the execution's RETRAIN variable: train even if an identical run completed
    deploy: bool = False  # after approval: staging, its golden test through the local API, production


@dataclass(frozen=True)
class SourceInfo:
    commit: str
    branch: str
    author: str
    message: str
    repo: str
    dirty: bool


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    digest: str  # sha256:..., what the pipeline's Build stage exports as IMAGE_DIGEST


@dataclass
class RunState:
    """Filled in stage by stage; `need` reads a field a later stage depends on."""

    options: Options
    work: Path
    cleanup: contextlib.ExitStack
    region: str = REGION
    source: SourceInfo | None = None
    templates: Any = None  # (data, pipeline) StackTemplates, from Synth
    cloud: Any = None  # LocalCloud: moto with IAM enforced, the gateway and the stand-ins, from Emulator
    deployment: Any = None  # LocalDeployment, from Emulator
    sagemaker: Any = None  # LocalSageMaker
    registry: Any = None  # LocalModelRegistry
    codepipeline: Any = None  # LocalCodePipeline
    deploy_pipeline: Any = None  # LocalCodePipeline of the deploy stack's pipeline, with --deploy
    bus: Any = None  # LocalEventBus: the templates' EventBridge rules
    events: list[dict[str, Any]] = field(default_factory=list)  # state-change events not yet delivered
    fault_plan: Any = None  # FaultPlan of --faults, shared by the stages that run handlers
    email_inbox: str | None = None  # SQS queue subscribed to the notification topic
    data_versions: dict[str, str] = field(default_factory=dict)  # key -> S3 version id, from Data
    image: BuiltImage | None = None
    execution_id: str | None = None  # the local pipeline execution, from Train
    job_name: str | None = None  # the execution's run: a training job, or a tuning job (with tuning)
    model_artifact: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # the Train action's output variables
    evaluation_uri: str | None = None  # from Evaluate
    package_arn: str | None = None  # from Register
    record: dict[str, Any] = field(default_factory=dict)  # the execution's own run's audit record
    # The record of the model the later stages take (Evaluate on): the same run's, or on a cache hit the
    # reused run's (its gate, package and approvals).
    model_record: dict[str, Any] = field(default_factory=dict)
    emails: list[dict[str, Any]] = field(default_factory=list)

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise StageFailed(f"an earlier stage did not provide {name}")
        return value

    def trained_job(self) -> str:
        """The training job whose model the later stages take (Train's TRAINING_JOB_NAME, as the pipeline
        passes it): the execution's own job, a tuning job's best trial, or the run a cache hit reused."""
        return self.outputs.get("TRAINING_JOB_NAME") or self.need("job_name")

    def client(self, service: str) -> Any:
        """A client with the harness's own (full-access) credentials."""
        return self.need("cloud").client(service)
