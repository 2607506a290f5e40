"""No retraining on identical inputs (issue 11 part 4), under start-training's own role with IAM enforced:
a second execution with the same image digest, data content, hyperparameters and training config starts no
job and succeeds with the first run's model and outputs, recording a cache hit that points at it; changing
any single input starts exactly one job; the config switch and the RETRAIN variable force a fresh run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pipeline_common import aws, training_job

from mlpipe.local.faults import FaultInjector, FaultPlan, SandboxCrash
from stacks.functions import START_TRAINING
from tests.lambda_fixtures import Lambdas
from tests.lambdas.builders import PREFIX, user_parameters


def run(lambdas: Lambdas, **overrides: Any) -> tuple[Any, str, int]:
    """One pipeline execution's Train action to its end: (result, the execution's run name, jobs started)."""
    before = len(lambdas.training.started)
    execution_id = lambdas.codepipeline.start_execution("StartPipelineExecution", "test")
    result = lambdas.run_action(user_parameters(execution_id, **overrides), execution_id)
    return result, f"{PREFIX}{execution_id}", len(lambdas.training.started) - before


def set_config(lambdas: Lambdas, **changes: Any) -> None:
    config = json.loads(lambdas.env(START_TRAINING)["TRAINING_CONFIG"])
    lambdas.env(START_TRAINING)["TRAINING_CONFIG"] = json.dumps({**config, **changes})


def test_identical_inputs_start_no_job_and_reuse_the_completed_run(lambdas: Lambdas) -> None:
    first, original, jobs = run(lambdas)
    assert first.succeeded and jobs == 1
    assert lambdas.emulated.get_record(lambdas.table, original)["status"] == "Completed"
    lambdas.emulated.read_inbox(lambdas.inbox)

    # The same files uploaded again: new version ids, the same content.
    reuploaded = lambdas.emulated.put_objects(
        lambdas.data_bucket,
        {
            "datasets/train/part-0.csv": b"y,x1\n1,2\n",
            "datasets/train/part-1.csv": b"y,x1\n3,4\n",
            "datasets/validation/val.csv": b"y,x1\n5,6\n",
        },
    )
    assert set(reuploaded.values()).isdisjoint(lambdas.data_versions.values())
    second, name, jobs = run(lambdas)
    assert second.succeeded and jobs == 0, "a cache hit starts no job"
    assert second.output_variables == first.output_variables  # the earlier run's model and outputs
    assert second.continuation_token is None

    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["cache_hit_of"] == original and record["status"] == "Completed"
    assert record["secondary_status"] == "CacheHit"
    assert record["model_artifact"] == first.output_variables["MODEL_ARTIFACT"]
    assert record["metrics"] == lambdas.emulated.get_record(lambdas.table, original)["metrics"]
    assert record["data_versions"] == reuploaded, (
        "the record keeps the exact version ids it would have trained on"
    )
    assert record["cache_key"] == lambdas.emulated.get_record(lambdas.table, original)["cache_key"]
    assert "same inputs as" in record["cache_decision"]
    assert lambdas.emulated.read_inbox(lambdas.inbox) == [], "no job, so no job emails"
    # A third identical run still reuses the original (a cache hit is never itself reused).
    _, third_name, jobs = run(lambdas)
    assert jobs == 0 and lambdas.emulated.get_record(lambdas.table, third_name)["cache_hit_of"] == original


def _data_byte(lambdas: Lambdas) -> dict[str, Any]:
    lambdas.emulated.put_objects(lambdas.data_bucket, {"datasets/train/part-1.csv": b"y,x1\n3,5\n"})
    return {}


def _new_file(lambdas: Lambdas) -> dict[str, Any]:
    lambdas.emulated.put_objects(lambdas.data_bucket, {"datasets/validation/more.csv": b"y,x1\n5,6\n"})
    return {}


def _hyperparameter(lambdas: Lambdas) -> dict[str, Any]:
    set_config(lambdas, hyperparameters={"max_depth": "7", "eta": "0.2"})
    return {}


def _instance_type(lambdas: Lambdas) -> dict[str, Any]:
    set_config(lambdas, instance_type="ml.m5.xlarge")
    return {}


def _instance_count(lambdas: Lambdas) -> dict[str, Any]:
    set_config(lambdas, instance_count=2)
    return {}


def _data_distribution(lambdas: Lambdas) -> dict[str, Any]:
    set_config(lambdas, data_distribution="ShardedByS3Key")
    return {}


def _image_digest(lambdas: Lambdas) -> dict[str, Any]:
    return {"image_digest": "sha256:" + "e" * 64}


CHANGES: dict[str, Callable[[Lambdas], dict[str, Any]]] = {
    "one data byte": _data_byte,
    "one more data file": _new_file,
    "a hyperparameter": _hyperparameter,
    "the instance type": _instance_type,
    "the instance count": _instance_count,
    "the data distribution": _data_distribution,
    "the image digest": _image_digest,
}


@pytest.mark.parametrize("change", CHANGES)
def test_changing_any_single_input_starts_exactly_one_job(change: str, lambdas: Lambdas) -> None:
    first, original, jobs = run(lambdas)
    assert first.succeeded and jobs == 1
    overrides = CHANGES[change](lambdas)
    second, name, jobs = run(lambdas, **overrides)
    assert second.succeeded and jobs == 1
    assert second.output_variables["TRAINING_JOB_NAME"] == name != original
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and "cache_hit_of" not in record
    assert record["cache_key"] != lambdas.emulated.get_record(lambdas.table, original)["cache_key"]
    # And the changed inputs are now themselves reusable.
    third, _, jobs = run(lambdas, **overrides)
    assert jobs == 0 and third.output_variables == second.output_variables


def test_the_retrain_variable_forces_a_fresh_run(lambdas: Lambdas) -> None:
    run(lambdas)
    forced, name, jobs = run(lambdas, retrain="true")
    assert forced.succeeded and jobs == 1
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert "cache_hit_of" not in record and record["cache_decision"] == "RETRAIN=true asked for a fresh run"
    # The pipeline's default (and an unresolved variable) does not force anything.
    assert run(lambdas, retrain="false")[2] == 0
    assert run(lambdas, retrain="#{variables.RETRAIN}")[2] == 0


def test_the_config_switch_turns_reuse_off(lambdas: Lambdas) -> None:
    run(lambdas)
    set_config(lambdas, cache=False)
    again, name, jobs = run(lambdas)
    assert again.succeeded and jobs == 1
    assert lambdas.emulated.get_record(lambdas.table, name)["cache_decision"] == "training_cache is off"


def test_a_run_whose_model_is_gone_is_not_reused(lambdas: Lambdas) -> None:
    first, _, _ = run(lambdas)
    bucket, _, key = first.output_variables["MODEL_ARTIFACT"].removeprefix("s3://").partition("/")
    lambdas.emulated.client("s3").delete_object(Bucket=bucket, Key=key)
    again, _, jobs = run(lambdas)
    assert again.succeeded and jobs == 1


def test_a_failed_run_is_never_reused(lambdas: Lambdas) -> None:
    lambdas.training.outcome = "fail"
    failed, _, _ = run(lambdas)
    assert not failed.succeeded
    lambdas.training.outcome = "ok"
    again, _, jobs = run(lambdas)
    assert again.succeeded and jobs == 1


def test_the_decision_is_pinned_per_execution_so_a_retry_never_both_reuses_and_trains(
    lambdas: Lambdas,
) -> None:
    """Execution B decides 'train' and dies before CreateTrainingJob; meanwhile A, with the same inputs,
    completes. B's retry follows its recorded decision: exactly one job of its own, no cache hit."""
    b_execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "B")
    b_event = lambdas.codepipeline.new_job(b_execution, "start-training", user_parameters(b_execution))
    plan = FaultPlan(by_operation={"sagemaker.CreateTrainingJob": ["crash_before"]})
    with aws.client_hooks(FaultInjector(plan).install), pytest.raises(SandboxCrash):
        lambdas.start(b_event)
    a_result, _, a_jobs = run(lambdas)
    assert a_result.succeeded and a_jobs == 1
    before = len(lambdas.training.started)
    retried = lambdas.start(b_event)
    assert retried["outcome"] == "continue" and len(lambdas.training.started) == before + 1
    record = lambdas.emulated.get_record(lambdas.table, f"{PREFIX}{b_execution}")
    assert record is not None and "cache_hit_of" not in record
    lambdas.deliver_events()


def test_a_tuning_run_is_reused_with_its_outputs(lambdas: Lambdas, tuning_deployment: Any) -> None:
    lambdas.use_tuning(tuning_deployment)
    first_execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "first")
    first = lambdas.run_action(user_parameters(first_execution), first_execution)
    assert first.succeeded and set(first.output_variables) == {
        "MODEL_ARTIFACT",
        "TRAINING_JOB_NAME",
        "TUNING_JOB_NAME",
    }
    before = len(lambdas.training.started)
    second_execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "second")
    second = lambdas.run_action(user_parameters(second_execution), second_execution)
    assert second.succeeded and len(lambdas.training.started) == before
    assert second.output_variables == first.output_variables
    name = training_job.tuning_job_name(PREFIX, second_execution)
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["kind"] == "tuning"
    assert record["cache_hit_of"] == first.output_variables["TUNING_JOB_NAME"]
    assert record["best_training_job"] == first.output_variables["TRAINING_JOB_NAME"]
    assert lambdas.sagemaker.tuning.jobs()[-1].name == first.output_variables["TUNING_JOB_NAME"]
