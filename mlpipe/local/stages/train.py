"""Train: the start-training handler, invoked the way CodePipeline invokes it, until the job ends.

The local CodePipeline hands out the Lambda invoke action's jobs (each continuation is a new job carrying
the token) and takes their results; the local SageMaker runs the job in the real image (with `tuning`, a
tuning job whose trials run one after another). Each state change it reports goes to the record-status
handler, as EventBridge would deliver it. Both handlers run under their own roles, through the gateway, as
Lambda's asynchronous invocations: a failed invocation is retried twice with the same event. When an earlier
run against the same emulator had identical inputs, the handler starts no job (a cache hit).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from pipeline_common import aws as lambda_aws
from pipeline_common import training_job

from mlpipe.local.cloud import LocalCloud
from mlpipe.local.console import StageFailed, note, warn
from mlpipe.local.deployment import LocalFunction
from mlpipe.local.faults import TRANSIENT, FaultInjector, FaultPlan
from mlpipe.local.state import RunState
from stacks.functions import RECORD_STATUS, START_TRAINING

TRIGGER = "manual"
ASYNC_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries


def training_environment(environment: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """start-training's environment with --hyperparameters applied over the configured ones."""
    config = json.loads(environment["TRAINING_CONFIG"])
    config["hyperparameters"] = {**config.get("hyperparameters", {}), **overrides}
    return {**environment, "TRAINING_CONFIG": json.dumps(config)}


def invoke_async(
    cloud: LocalCloud,
    function: LocalFunction,
    event: dict[str, Any],
    environment: dict[str, str] | None = None,
) -> None:
    """Lambda's asynchronous invocation: an error is retried with the same event, twice."""
    for attempt in range(1, ASYNC_ATTEMPTS + 1):
        try:
            cloud.invoke(function, event, environment)
            return
        except Exception as error:
            warn(
                f"{function.logical_id} invocation {attempt}/{ASYNC_ATTEMPTS} failed: {type(error).__name__}: {error}"
            )
    raise StageFailed(
        f"{function.logical_id} failed {ASYNC_ATTEMPTS} times on the same event (it would go to its DLQ)"
    )


def deliver_events(state: RunState, record: LocalFunction) -> None:
    while state.events:
        invoke_async(state.need("cloud"), record, state.events.pop(0))


FAULT_RATE = 0.08  # of the handlers' request attempts, with --faults


def run(state: RunState) -> None:
    if state.options.faults_seed is None:
        _train(state)
        return
    plan = FaultPlan(seed=state.options.faults_seed, rate=FAULT_RATE, kinds=TRANSIENT)
    with lambda_aws.client_hooks(FaultInjector(plan).install):
        try:
            _train(state)
        finally:
            kinds = Counter(fault.kind for fault in plan.injected)
            note(
                f"--faults {state.options.faults_seed}: {len(plan.injected)} of {plan.attempts} request attempts "
                f"failed ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items())) or 'none'})"
            )


def _train(state: RunState) -> None:
    cloud, deployment = state.need("cloud"), state.need("deployment")
    source, image, pipeline = state.need("source"), state.need("image"), state.need("codepipeline")
    start = deployment.function(START_TRAINING.handler)
    record = deployment.function(RECORD_STATUS.handler)
    start_env = training_environment(start.environment, state.options.hyperparameter_overrides)
    retrain = "true" if state.options.retrain else "false"
    execution_id = pipeline.start_execution(
        "StartPipelineExecution", f"local-run by {source.author}", {"TRIGGER": TRIGGER, "RETRAIN": retrain}
    )
    # What CodePipeline resolves the action's parameters to (README: Train action user parameters).
    user_parameters = {
        "image_uri": image.tag,
        "image_digest": image.digest,
        "commit_id": source.commit,
        "branch": source.branch,
        "repo": source.repo,
        "pipeline_execution_id": execution_id,
        "trigger": TRIGGER,
        "retrain": retrain,
    }
    tuning = json.loads(start_env["TRAINING_CONFIG"]).get("tuning")
    prefix = start_env["JOB_NAME_PREFIX"]
    state.job_name = (
        training_job.tuning_job_name(prefix, execution_id)
        if tuning
        else training_job.job_name(prefix, execution_id)
    )
    while True:
        event = pipeline.new_job(execution_id, start.logical_id, user_parameters)
        job_id = event["CodePipeline.job"]["id"]
        invoke_async(cloud, start, event, start_env)
        deliver_events(state, record)
        result = pipeline.result(job_id)
        if result is None:
            pipeline.time_out(job_id)
            raise StageFailed(
                "the start-training handler returned without a job result: the action times out"
            )
        if not result.succeeded or not result.continuation_token:
            break
        time.sleep(state.options.poll_seconds)
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
