"""Train: the start-training handler, invoked the way CodePipeline invokes it, until the job ends.

`LocalCodePipeline` answers for CodePipeline (job results, continuation tokens) and `LocalSageMaker` runs
the job in the real image; each state change it reports goes to the record-status handler, as
EventBridge would deliver it. Both stand-ins reach the handlers through `pipeline_common.aws.use_clients`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pipeline_common import aws as lambda_aws

from mlpipe.local import containers
from mlpipe.local.codepipeline import LocalCodePipeline
from mlpipe.local.console import StageFailed, note
from mlpipe.local.lambda_runtime import invoke, lambda_environment
from mlpipe.local.sagemaker import LocalSageMaker
from mlpipe.local.state import RunState
from stacks.functions import RECORD_STATUS, START_TRAINING

TRIGGER = "manual"


def training_environment(environment: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """start-training's environment with --hyperparameters applied over the configured ones."""
    config = json.loads(environment["TRAINING_CONFIG"])
    config["hyperparameters"] = {**config.get("hyperparameters", {}), **overrides}
    return {**environment, "TRAINING_CONFIG": json.dumps(config)}


def run(state: RunState) -> None:
    deployment, source, image = state.need("deployment"), state.need("source"), state.need("image")
    endpoint, region = state.need("endpoint_url"), state.region
    start_env = training_environment(
        deployment.function(START_TRAINING.handler).environment, state.options.hyperparameter_overrides
    )
    record_env = deployment.function(RECORD_STATUS.handler).environment
    events: list[dict[str, Any]] = []
    sagemaker = LocalSageMaker(
        s3_client=state.client("s3"),
        workdir=state.work / "jobs",
        start_container=containers.start_training_container,
        stop_container=containers.remove_container,
        on_state_change=events.append,
        region=region,
    )
    state.cleanup.callback(sagemaker.stop_all)
    execution_id = str(uuid.uuid4())
    pipeline = LocalCodePipeline(
        pipeline_name=start_env["PIPELINE_NAME"],
        execution_id=execution_id,
        trigger_detail=f"local-run by {source.author}",
        variables={"TRIGGER": TRIGGER, "DATA_CHANGE": "none"},
    )
    user_parameters = {
        "image_uri": image.tag,
        "image_digest": image.digest,
        "commit_id": source.commit,
        "branch": source.branch,
        "repo": source.repo,
        "pipeline_execution_id": execution_id,
        "trigger": TRIGGER,
    }
    state.job_name = start_env["JOB_NAME_PREFIX"] + execution_id
    with lambda_aws.use_clients({"sagemaker": sagemaker, "codepipeline": pipeline}):
        while True:
            with lambda_environment(start_env, endpoint, region):
                invoke(START_TRAINING.handler, pipeline.job_event("start-training", user_parameters))
            with lambda_environment(record_env, endpoint, region):
                while events:
                    invoke(RECORD_STATUS.handler, events.pop(0))
            result = pipeline.last_result
            if result is None:
                raise StageFailed("the start-training handler returned without a job result")
            if not result.succeeded or not result.continuation_token:
                break
            time.sleep(state.options.poll_seconds)
    log_file = state.work / "jobs" / state.job_name / "train.log"
    if log_file.exists():
        for line in log_file.read_text(errors="replace").splitlines():
            if line.startswith("METRIC "):
                note(line)
    if not result.succeeded:
        raise StageFailed(f"CodePipeline action failed: {result.failure_message}")
    state.model_artifact = result.output_variables.get("MODEL_ARTIFACT")
    note(f"job {state.job_name} completed; outputs {result.output_variables}")
