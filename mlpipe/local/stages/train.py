"""Train: the start-training handler, invoked the way CodePipeline invokes it, until the job ends.

The local CodePipeline hands out the Lambda invoke action's jobs (each continuation is a new job carrying
the token) and takes their results; the local SageMaker runs the job in the real image. Each state change
it reports goes through the synthesized EventBridge rules to record-status (`stages.actions`). Both
handlers run under their own roles, through the gateway, as Lambda's asynchronous invocations: a failed
invocation is retried twice with the same event.
"""

from __future__ import annotations

import json

from mlpipe.local.console import StageFailed, note
from mlpipe.local.stages.actions import handler_faults, run_action
from mlpipe.local.state import RunState
from stacks.functions import START_TRAINING

TRIGGER = "manual"


def training_environment(environment: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """start-training's environment with --hyperparameters applied over the configured ones."""
    config = json.loads(environment["TRAINING_CONFIG"])
    config["hyperparameters"] = {**config.get("hyperparameters", {}), **overrides}
    return {**environment, "TRAINING_CONFIG": json.dumps(config)}


def origin_parameters(state: RunState) -> dict[str, str]:
    """What every action of the execution is told about where it came from (the pipeline's variables)."""
    source, image = state.need("source"), state.need("image")
    return {
        "image_uri": image.tag,
        "image_digest": image.digest,
        "commit_id": source.commit,
        "branch": source.branch,
        "repo": source.repo,
        "pipeline_execution_id": state.need("execution_id"),
    }


def run(state: RunState) -> None:
    with handler_faults(state):
        _train(state)


def _train(state: RunState) -> None:
    deployment, source, pipeline = state.need("deployment"), state.need("source"), state.need("codepipeline")
    start = deployment.function(START_TRAINING.handler)
    start_env = training_environment(start.environment, state.options.hyperparameter_overrides)
    state.execution_id = pipeline.start_execution(
        "StartPipelineExecution", f"local-run by {source.author}", {"TRIGGER": TRIGGER}
    )
    state.job_name = start_env["JOB_NAME_PREFIX"] + state.execution_id
    result = run_action(state, start, {**origin_parameters(state), "trigger": TRIGGER}, start_env)
    log_file = state.work / "jobs" / state.job_name / "train.log"
    if log_file.exists():
        for line in log_file.read_text(errors="replace").splitlines():
            if line.startswith("METRIC "):
                note(line)
    if not result.succeeded:
        raise StageFailed(f"CodePipeline action failed: {result.failure_message}")
    state.model_artifact = result.output_variables.get("MODEL_ARTIFACT")
    note(f"job {state.job_name} completed; outputs {result.output_variables}")
