"""Tuning (issue 11 part 2), under the handlers' own roles with IAM enforced: start-training runs a
hyperparameter tuning job instead of a training job when `tuning` is configured, keeps the stage open until
it ends and outputs the best training job's model; record-status keeps one record for the tuning job and
one per trial, and sends the tuning job's emails only (built from AWS's published samples)."""

from __future__ import annotations

import json
import random
import re
import uuid
from typing import Any

import pytest
from pipeline_common import audit, training_job
from start_training import training

from mlpipe.local.faults import SandboxCrash
from stacks.functions import START_TRAINING
from tests.lambda_fixtures import Lambdas
from tests.lambdas.builders import (
    COMMIT,
    IMAGE_DIGEST,
    IMAGE_URI,
    PREFIX,
    default_tags,
    state_change_event,
    tuning_state_change_event,
    user_parameters,
)

TUNED = "validation:rmse"


def objective(hyperparameters: dict[str, str]) -> dict[str, float]:
    """Trials differ: the RMSE is lowest at max_depth 5."""
    return {
        TUNED: abs(int(hyperparameters["max_depth"]) - 5) + float(hyperparameters["eta"]),
        "train:rmse": 0.1,
    }


@pytest.fixture
def tuning(lambdas: Lambdas, tuning_deployment: Any) -> dict[str, Any]:
    lambdas.training.metrics_for = objective
    return lambdas.use_tuning(tuning_deployment)


def execution(lambdas: Lambdas) -> tuple[str, str, dict[str, str]]:
    execution_id = lambdas.codepipeline.start_execution("StartPipelineExecution", "test")
    name = training_job.tuning_job_name(PREFIX, execution_id)
    return execution_id, name, user_parameters(execution_id)


def test_a_tuning_job_replaces_the_training_job_and_its_best_model_is_the_output(
    lambdas: Lambdas, tuning: dict[str, Any]
) -> None:
    execution_id, name, parameters = execution(lambdas)
    result = lambdas.run_action(parameters, execution_id)
    assert result.succeeded, result.failure_message

    # The request: the training job definition is the one a training job gets (image, channels, key, output,
    # instances), the tuned hyperparameters are not static, and the name is short and from the execution id.
    assert len(name) <= 32 and name == training.run_name(*_settings_and_params(lambdas, parameters), "tuning")
    job = lambdas.sagemaker.tuning.job(name)
    request = job.request
    definition = request["TrainingJobDefinition"]
    single = training_job.create_request(*_settings_and_params(lambdas, parameters), _data(lambdas), "x")
    for field in (
        "AlgorithmSpecification",
        "RoleArn",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
    ):
        assert definition[field] == single[field], field
    assert definition["StaticHyperParameters"] == {}  # max_depth and eta are both tuned
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": TUNED}
    assert config["ParameterRanges"] == tuning["parameter_ranges"]
    assert config["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": 4,
        "MaxParallelTrainingJobs": 2,
        "MaxRuntimeInSeconds": 23 * 3600,
    }
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["tuning-job"] == name and tags["pipeline-execution"] == execution_id
    assert tags["image-digest"] == IMAGE_DIGEST

    # Four trials, one job each, one after another; the best (lowest RMSE) is the output.
    assert len(job.trials) == 4 and len(lambdas.training.started) == 4
    best = job.best()
    assert best is not None and all(job.objectives[best] <= v for v in job.objectives.values())
    artifact = f"s3://{lambdas.model_bucket}/models/{best}/output/model.tar.gz"
    assert result.output_variables == {
        "MODEL_ARTIFACT": artifact,
        "TRAINING_JOB_NAME": best,
        "TUNING_JOB_NAME": name,
    }

    # One record for the tuning job, naming the best job and its objective value; one per trial.
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["kind"] == "tuning" and record["status"] == "Completed"
    assert record["best_training_job"] == best
    assert record["objective_metric"] == TUNED and record["objective_value"] == pytest.approx(
        job.objectives[best]
    )
    assert record["model_artifact"] == artifact
    assert record["trial_counts"] == {"Completed": 4}
    assert record["tuning"]["max_jobs"] == 4 and record["tuning"]["strategy"] == "Bayesian"
    assert record["commit_id"] == COMMIT and record["image_uri"] == IMAGE_URI
    assert record["data_versions"] == lambdas.data_versions
    assert record["billable_seconds"] == sum(
        lambdas.sagemaker.describe_training_job(TrainingJobName=t)["BillableTimeInSeconds"]
        for t in job.trials
    )
    trials = {r["job_name"]: r for r in lambdas.emulated.scan(lambdas.table) if r["job_name"] != name}
    assert set(trials) == set(job.trials)
    for trial, trial_record in trials.items():
        assert trial_record["tuning_job"] == name and trial_record["status"] == "Completed"
        assert trial_record["commit_id"] == COMMIT  # from the tags SageMaker copies to each trial
        assert trial_record["metrics"][TUNED] == pytest.approx(job.objectives[trial])
        assert trial_record["hyperparameters"]["_tuning_objective_metric"] == TUNED

    # The email summarizes the tuning job: two emails in all, none per trial.
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [(e["attributes"]["status"], e["attributes"]["job_name"]) for e in emails] == [
        ("InProgress", name),
        ("Completed", name),
    ]
    completed = emails[-1]
    assert completed["subject"].startswith(f"[mlpipe/test] Tuning Completed: {name}")
    body = completed["body"]
    assert f"Tuning job {name} is Completed." in body
    assert "Trials:        4 (Completed 4); at most 4, 2 at a time, strategy Bayesian" in body
    assert re.search(rf"Best job:      {best}, validation:rmse = [0-9.]+ \(Minimize\)", body)
    assert "Searched:      eta 0.05..0.5, max_depth 2..8" in body
    assert f"Model:         {artifact}" in body
    assert "Hyperparameters of the best job:" in body
    assert f"#/hyper-tuning-jobs/{name}" in body


def test_a_retry_after_a_crash_finds_its_own_tuning_job(
    lambdas: Lambdas, tuning: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ResourceInUse means ours: the name is the same for every retry of the execution."""
    execution_id, name, parameters = execution(lambdas)
    event = lambdas.codepipeline.new_job(execution_id, "start-training", parameters)
    real = audit.create_record
    crashes = iter([True])

    def crash_once(table: str, record: dict[str, Any]) -> bool:
        if next(crashes, False):
            raise SandboxCrash("the sandbox died after CreateHyperParameterTuningJob")
        return real(table, record)

    monkeypatch.setattr(audit, "create_record", crash_once)
    with pytest.raises(SandboxCrash):
        lambdas.start(event)
    retried = lambdas.start(event)
    assert retried["outcome"] == "continue" and retried["job_name"] == name
    assert [j.name for j in lambdas.sagemaker.tuning.jobs()] == [name]
    token = json.loads(lambdas.codepipeline.result(event["CodePipeline.job"]["id"]).continuation_token)
    assert token["kind"] == "tuning" and token["job_name"] == name
    lambdas.deliver_events()


def test_a_tuning_job_whose_trials_all_fail_fails_the_action_with_its_reason(
    lambdas: Lambdas, tuning: dict[str, Any]
) -> None:
    lambdas.training.outcome = "fail"
    execution_id, name, parameters = execution(lambdas)
    result = lambdas.run_action(parameters, execution_id)
    assert not result.succeeded
    assert f"Tuning job {name} Failed" in result.failure_message
    assert "No training job reported the objective metric validation:rmse" in result.failure_message
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert (
        record is not None and record["status"] == "Failed" and "objective metric" in record["failure_reason"]
    )
    assert record["trial_counts"] == {"NonRetryableError": 4}
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Failed"]
    assert "Best job:      none yet" in emails[-1]["body"]


def test_a_failed_action_stops_its_running_tuning_job(lambdas: Lambdas, tuning: dict[str, Any]) -> None:
    lambdas.training.polls = 50  # the first trial keeps running
    execution_id, name, parameters = execution(lambdas)
    first = lambdas.codepipeline.new_job(execution_id, "start-training", parameters)
    lambdas.start(first)
    with lambdas.as_function(START_TRAINING):
        training.stop_if_running(name, training_job.KIND_TUNING)  # what a failed action does, as its role
    job = lambdas.sagemaker.tuning.job(name)
    assert job.status == "Stopped"
    assert [lambdas.sagemaker.job(t).status for t in job.trials] == ["Stopped"]
    lambdas.deliver_events()
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Stopped"


def test_with_spot_the_trials_use_spot_but_never_share_a_checkpoint_folder(
    lambdas: Lambdas, tuning: dict[str, Any]
) -> None:
    config = json.loads(lambdas.env(START_TRAINING)["TRAINING_CONFIG"])
    lambdas.env(START_TRAINING)["TRAINING_CONFIG"] = json.dumps(
        {**config, "use_spot": True, "max_wait_seconds": 7200}
    )
    execution_id, name, parameters = execution(lambdas)
    lambdas.start(lambdas.codepipeline.new_job(execution_id, "start-training", parameters))
    definition = lambdas.sagemaker.tuning.job(name).request["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert "CheckpointConfig" not in definition
    lambdas.sagemaker.tuning.wait(name)
    lambdas.deliver_events()


# -- record-status on tuning events (from AWS's published sample), at least once and in any order ----------
def tuning_events(name: str, terminal: str, trials: list[str]) -> list[dict[str, Any]]:
    events = [
        tuning_state_change_event(name, "InProgress", 10),
        tuning_state_change_event(name, terminal, 900),
    ]
    tags = {**default_tags(name), "tuning-job": name}
    for trial in trials:
        events += [
            state_change_event(trial, "InProgress", 20, tags=tags),
            state_change_event(trial, "Completed", 800, tags=tags),
        ]
    return events


@pytest.mark.parametrize("seed", range(4))
def test_tuning_and_trial_events_in_any_order_and_twice_give_two_emails(
    seed: int, lambdas: Lambdas, tuning: dict[str, Any]
) -> None:
    execution_id, name, parameters = execution(lambdas)
    lambdas.start(lambdas.codepipeline.new_job(execution_id, "start-training", parameters))
    lambdas.sagemaker.tuning.wait(name)
    lambdas.events.clear()  # the stand-in's own events: this test sends ones built from the sample instead
    trials = lambdas.sagemaker.tuning.job(name).trials
    events = tuning_events(name, "Completed", trials)
    rng = random.Random(seed)
    events += [rng.choice(events) for _ in range(3)]
    rng.shuffle(events)
    for event in events:
        lambdas.record(event)
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Completed" and record["best_training_job"]
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    statuses = [e["attributes"]["status"] for e in emails]
    # InProgress first, unless Completed came first (then InProgress is stale and never sent).
    assert statuses in (["InProgress", "Completed"], ["Completed"])
    assert {e["attributes"]["job_name"] for e in emails} == {name}
    for trial in trials:
        trial_record = lambdas.emulated.get_record(lambdas.table, trial)
        assert trial_record is not None and trial_record["status"] == "Completed"
        assert trial_record["tuning_job"] == name and "notified_rank" not in trial_record


def test_a_trial_without_the_tag_is_still_known_by_its_name_and_sends_no_email(lambdas: Lambdas) -> None:
    name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    trial = f"{name}-001-0a1b2c3d"
    lambdas.finished_job(trial)
    result = lambdas.record(state_change_event(trial, "InProgress", 10, tags={}))
    assert result["trial_of"] == name and not result["emailed"]
    assert lambdas.emulated.read_inbox(lambdas.inbox) == []


def test_a_deleted_tuning_job_is_not_recorded(lambdas: Lambdas) -> None:
    name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    result = lambdas.record(tuning_state_change_event(name, "Deleting", 10))
    assert result["outcome"] == "not-tracked"
    assert lambdas.emulated.get_record(lambdas.table, name) is None


# -- helpers -----------------------------------------------------------------------------------------------------
def _settings_and_params(lambdas: Lambdas, parameters: dict[str, str]) -> tuple[Any, Any]:
    with lambdas.as_function(START_TRAINING):
        from pipeline_common.settings import StartTrainingSettings

        return StartTrainingSettings.from_env(), training.parse_parameters(parameters)


def _data(lambdas: Lambdas) -> Any:
    from pipeline_common.data_version import DataObject, DataVersion

    objects = tuple(DataObject(key, version, "", 1) for key, version in lambdas.data_versions.items())
    return DataVersion(lambdas.data_bucket, "datasets/", objects)
