"""Train: the start-training handler, invoked the way CodePipeline invokes it, until the job ends.

The local CodePipeline hands out the Lambda invoke action's jobs (each continuation is a new job carrying
the token) and takes their results; the local SageMaker runs the job in the real image (with `tuning`, a
tuning job whose trials run one after another). Each state change it reports goes through the synthesized
EventBridge rules to record-status (`stages.actions`). Both handlers run under their own roles, through the
gateway, as Lambda's asynchronous invocations: a failed invocation is retried twice with the same event.
When an earlier run against the same emulator had identical inputs, the handler starts no job (a cache hit).
"""

from __future__ import annotations

import json

from pipeline_common import training_job

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
    retrain = "true" if state.options.retrain else "false"
    state.execution_id = pipeline.start_execution(
        "StartPipelineExecution", f"local-run by {source.author}", {"TRIGGER": TRIGGER, "RETRAIN": retrain}
    )
    tuning = json.loads(start_env["TRAINING_CONFIG"]).get("tuning")
    prefix = start_env["JOB_NAME_PREFIX"]
    state.job_name = (
        training_job.tuning_job_name(prefix, state.execution_id)
        if tuning
        else training_job.job_name(prefix, state.execution_id)
    )
    parameters = {**origin_parameters(state), "trigger": TRIGGER, "retrain": retrain}
    result = run_action(state, start, parameters, start_env)
    if tuning:
        show_trials(state)
    trained = result.output_variables.get("TRAINING_JOB_NAME") or state.job_name
    log_file = state.work / "jobs" / trained / "train.log"
    if log_file.exists():
        for line in log_file.read_text(errors="replace").splitlines():
            if line.startswith("METRIC "):
                note(line)
    if not result.succeeded:
        raise StageFailed(f"CodePipeline action failed: {result.failure_message}")
    state.model_artifact = result.output_variables.get("MODEL_ARTIFACT")
    state.outputs = dict(result.output_variables)
    if not started_a_job(state):
        note(f"cache hit: no job started; {state.job_name} reuses {trained}'s model (same inputs)")
    note(f"{state.job_name} done; outputs {result.output_variables}")


def started_a_job(state: RunState) -> bool:
    sagemaker = state.need("sagemaker")
    for lookup in (sagemaker.job, sagemaker.tuning.job):
        try:
            lookup(state.job_name)
            return True
        except Exception:
            continue
    return False


def show_trials(state: RunState) -> None:
    """One line per trial of the execution's tuning job: its hyperparameters, status and objective."""
    sagemaker = state.need("sagemaker")
    try:
        job = sagemaker.tuning.job(state.job_name)
    except Exception:
        return  # no tuning job of this execution: a cache hit
    best = job.best()
    for trial in job.trials:
        value = job.objectives.get(trial)
        shown = f"{job.objective['MetricName']}={value:.6g}" if value is not None else "no objective"
        tuned = ", ".join(f"{k}={v}" for k, v in job.tuned[trial].items())
        note(
            f"{trial}: {sagemaker.job(trial).status}, {tuned}: {shown}"
            + ("  <- best" if trial == best else "")
        )
