"""The handlers driven the way the local run drives them: mlpipe.local.codepipeline answers for
CodePipeline, mlpipe.local.sagemaker runs the job (here a small Python process instead of the image),
and every state-change event it emits goes to record-status. No container engine needed."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from record_status import handler as record_status
from start_training import handler as start_training

from tests.conftest import Emulated
from tests.lambda_fixtures import RecordEnv, StartEnv
from tests.lambdas.builders import PREFIX, user_parameters

FAKE_TRAIN = """
import pathlib, sys
opt_ml = pathlib.Path(sys.argv[1])
rows = sum(len(p.read_text().splitlines()) for p in (opt_ml / "input/data/train").glob("*.csv"))
if sys.argv[2] == "fail":
    (opt_ml / "output/failure").write_text("ValueError: max_depth must be >= 0, got -1")
    sys.exit(2)
(opt_ml / "model/model.txt").write_text(f"trained on {rows} rows")
print("METRIC train:rmse=0.75")
print("METRIC validation:rmse=0.4213")
print("METRIC validation:r2=8.7e-1")
"""


def run_pipeline(
    behaviour: str, emulated: Emulated, tmp_path: Path, clients: Any, lambda_context: Any
) -> tuple[Any, str]:
    from mlpipe.local.codepipeline import LocalCodePipeline
    from mlpipe.local.sagemaker import LocalSageMaker

    def start_container(image: str, opt_ml: Path, name: str, log_file: Path) -> subprocess.Popen:
        log = log_file.open("w")
        return subprocess.Popen(
            [sys.executable, "-c", FAKE_TRAIN, str(opt_ml), behaviour], stdout=log, stderr=log
        )

    events: list[dict[str, Any]] = []
    sagemaker = LocalSageMaker(
        s3_client=emulated.client("s3"),
        workdir=tmp_path,
        start_container=start_container,
        stop_container=lambda name: None,
        on_state_change=events.append,
        region="us-east-1",
    )
    execution = str(uuid.uuid4())
    pipeline = LocalCodePipeline("TrainingPipeline-test", execution, "test", {"TRIGGER": "manual"})
    clients({"sagemaker": sagemaker, "codepipeline": pipeline})
    parameters = user_parameters(execution, trigger="manual")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        start_training.lambda_handler(pipeline.job_event("start-training", parameters), lambda_context)
        while events:
            record_status.lambda_handler(events.pop(0), lambda_context)
        result = pipeline.last_result
        assert result is not None
        if not result.succeeded or not result.continuation_token:
            return pipeline, f"{PREFIX}{execution}"
        time.sleep(0.1)
    pytest.fail("the job did not finish")


@pytest.fixture
def shared_table(
    start_env: StartEnv, record_env: RecordEnv, emulated: Emulated, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("AUDIT_TABLE_NAME", record_env.table)
    emulated.client("s3").create_bucket(Bucket="models-bucket")
    return record_env.table


def test_a_completed_run_with_the_local_stand_ins(
    shared_table: str,
    record_env: RecordEnv,
    start_env: StartEnv,
    emulated: Emulated,
    tmp_path: Path,
    clients: Any,
    lambda_context: Any,
) -> None:
    pipeline, name = run_pipeline("ok", emulated, tmp_path, clients, lambda_context)
    assert pipeline.last_result.succeeded
    artifact = f"s3://models-bucket/models/{name}/output/model.tar.gz"
    assert pipeline.last_result.output_variables == {"MODEL_ARTIFACT": artifact, "TRAINING_JOB_NAME": name}
    record = emulated.get_record(shared_table, name)
    assert record is not None
    assert record["status"] == "Completed" and record["model_artifact"] == artifact
    assert record["metrics"] == {"train:rmse": 0.75, "validation:rmse": 0.4213, "validation:r2": 0.87}
    assert record["data_versions"] == start_env.versions and record["trigger"] == "manual"
    assert record["billable_seconds"] >= 1 and record["ended_at"] >= record["started_at"]
    emails = emulated.read_inbox(record_env.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Completed"]
    assert "validation:rmse  0.4213" in emails[-1]["body"]


def test_a_failed_run_with_the_local_stand_ins(
    shared_table: str,
    record_env: RecordEnv,
    emulated: Emulated,
    tmp_path: Path,
    clients: Any,
    lambda_context: Any,
) -> None:
    pipeline, name = run_pipeline("fail", emulated, tmp_path, clients, lambda_context)
    assert not pipeline.last_result.succeeded
    assert "max_depth must be >= 0" in pipeline.last_result.failure_message
    record = emulated.get_record(shared_table, name)
    assert record is not None and record["status"] == "Failed" and "max_depth" in record["failure_reason"]
    emails = emulated.read_inbox(record_env.inbox)
    assert [e["attributes"]["status"] for e in emails] == ["InProgress", "Failed"]
    assert "max_depth must be >= 0" in emails[-1]["body"]
