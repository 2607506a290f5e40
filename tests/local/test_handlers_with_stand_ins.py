"""The handlers driven the way the local run drives them, with a training "container" that is a real
process following the /opt/ml contract (the real image runs in tests/e2e): the local CodePipeline hands
out the jobs, the local SageMaker runs the process, and its state-change events go to record-status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lambda_fixtures import Lambdas
from tests.lambdas.builders import user_parameters

FAKE_TRAIN = """
import pathlib, sys, time
opt_ml = pathlib.Path(sys.argv[1])
rows = sum(len(p.read_text().splitlines()) for p in (opt_ml / "input/data/train").glob("*.csv"))
time.sleep(0.3)  # still running at the first describe
if sys.argv[2] == "fail":
    (opt_ml / "output/failure").write_text("ValueError: max_depth must be >= 0, got -1")
    sys.exit(2)
(opt_ml / "model/model.txt").write_text(f"trained on {rows} rows")
print("METRIC train:rmse=0.75")
print("METRIC validation:rmse=0.4213")
print("METRIC validation:r2=8.7e-1")
"""


@pytest.fixture
def process_container(lambdas: Lambdas) -> list[str]:
    behaviour: list[str] = ["ok"]

    def start(image: str, opt_ml: Path, name: str, log_file: Path) -> subprocess.Popen:
        log = log_file.open("w")
        return subprocess.Popen(
            [sys.executable, "-c", FAKE_TRAIN, str(opt_ml), behaviour[0]], stdout=log, stderr=log
        )

    lambdas.sagemaker._start_container = start
    return behaviour


def run(lambdas: Lambdas) -> tuple[object, str]:
    execution = lambdas.codepipeline.start_execution("StartPipelineExecution", "local-run by test")
    result = None
    for _ in range(200):
        result = lambdas.run_action(user_parameters(execution, trigger="manual"), execution, max_jobs=1_000)
        break
    return result, lambdas.job_name(execution)


def test_a_completed_run_with_the_local_stand_ins(lambdas: Lambdas, process_container: list[str]) -> None:
    result, name = run(lambdas)
    assert result.succeeded
    artifact = f"s3://{lambdas.model_bucket}/models/{name}/output/model.tar.gz"
    assert result.output_variables == {"MODEL_ARTIFACT": artifact, "TRAINING_JOB_NAME": name}
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None
    assert record["status"] == "Completed" and record["model_artifact"] == artifact
    assert record["metrics"] == {"train:rmse": 0.75, "validation:rmse": 0.4213, "validation:r2": 0.87}
    assert record["data_versions"] == lambdas.data_versions and record["trigger"] == "manual"
    assert record["billable_seconds"] >= 1 and record["ended_at"] >= record["started_at"]
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Completed"]
    assert "validation:rmse  0.4213" in emails[-1]["body"]


def test_a_failed_run_with_the_local_stand_ins(lambdas: Lambdas, process_container: list[str]) -> None:
    process_container[0] = "fail"
    result, name = run(lambdas)
    assert not result.succeeded and "max_depth must be >= 0" in result.failure_message
    record = lambdas.emulated.get_record(lambdas.table, name)
    assert record is not None and record["status"] == "Failed" and "max_depth" in record["failure_reason"]
    emails = lambdas.emulated.read_inbox(lambdas.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Failed"]
    assert "max_depth must be >= 0" in emails[-1]["body"]
