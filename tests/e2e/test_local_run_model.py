"""The model seam end to end: the local run with `--model examples/linear_model` builds the image with that
folder (as CodeBuild would with `model_dir`), trains it with a test channel, records its metrics and model
meta, and smoke-serves it. `examples/linear_model` is used as it is: nothing outside it names it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlpipe.local.run import STAGES

ROOT = Path(__file__).resolve().parents[2]
MODEL = "examples/linear_model"
pytestmark = [pytest.mark.e2e, pytest.mark.image]
# No baseline in a fresh emulator; the floor in cdk.json is the default model's, so this run's gate only
# checks the regression rule (there is nothing to regress from).
GATE = {"metric": "test:rmse", "direction": "minimize", "max_regression": 0.02, "floor": None}


def data_with_a_test_channel(folder: Path) -> Path:
    """The sample data, its validation rows split in two: validation/ and test/."""
    shutil.copytree(ROOT / "data/sample/train", folder / "train")
    header, *rows = (ROOT / "data/sample/validation/validation.csv").read_text().splitlines()
    half = len(rows) // 2
    for channel, part in (("validation", rows[:half]), ("test", rows[half:])):
        (folder / channel).mkdir(parents=True)
        (folder / channel / f"{channel}.csv").write_text("\n".join([header, *part]) + "\n")
    return folder


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    data = data_with_a_test_channel(tmp_path_factory.mktemp("data"))
    output = tmp_path_factory.mktemp("model-run")
    # The console script's module with this interpreter: the code of this checkout, what `make local-run
    # ARGS="--model examples/linear_model"` runs.
    command = [sys.executable, "-m", "mlpipe.local.cli", "--model", MODEL, "--data", str(data)]
    command += ["--output", str(output), "--context", f"quality_gate={json.dumps(GATE)}"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "COLUMNS": "160"},
        check=False,
    )
    (run_dir,) = [p for p in output.iterdir() if p.is_dir()]
    return result, run_dir


def test_the_example_model_trains_and_serves_through_the_local_run(model_run: tuple) -> None:
    result, run_dir = model_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    for stage in STAGES:
        assert f"✓ {stage.name}" in result.stdout
    assert f"model {MODEL}" in result.stdout  # the Build stage built this folder

    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "Completed"
    manifest = json.loads((ROOT / MODEL / "model.json").read_text())
    # Its own metric names, on every channel it had, the test channel's the final ones.
    for channel in ("train", "validation", "test"):
        assert any(name.startswith(f"{channel}:") for name in record["metrics"]), record["metrics"]
    assert {name.split(":", 1)[1] for name in record["metrics"]} <= set(manifest["metrics"])
    meta = record["model_meta"]
    assert meta["model_name"] == manifest["name"] and meta["task"] == "regression"
    assert meta["final_metrics_channel"] == "test"
    email = (run_dir / "email.txt").read_text()
    assert "Task:          regression" in email and "Final metric:  test:" in email

    # Smoke-serve answered: its latency line, and the rows it sent had column names (JSON records).
    assert "validation rows per request (application/json)" in result.stdout
