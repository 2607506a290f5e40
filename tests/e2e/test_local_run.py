"""`make local-run` as a user runs it: real emulator, real image, real handlers, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe.local import containers
from mlpipe.local.emulator import MotoServer
from mlpipe.local.run import STAGES
from tests.processes import marked_processes, new_mark

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the console scripts `make setup` installs
pytestmark = [pytest.mark.e2e, pytest.mark.image]


# Every process a run starts inherits this mark, so a test finds what one run left behind, and only that.
RUN_MARK = "MLPIPE_E2E_RUN"


def local_run(
    endpoint_url: str | None, output: Path, *extra: str, mark: str = ""
) -> subprocess.CompletedProcess[str]:
    args = ["--output", str(output), *extra]
    if endpoint_url:
        args += ["--endpoint-url", endpoint_url]
    return subprocess.run(
        ["make", "--no-print-directory", "local-run", f"ARGS={' '.join(args)}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "160", RUN_MARK: mark},
        check=False,
    )


def run_files(output: Path) -> dict[str, Any]:
    (run_dir,) = [p for p in output.iterdir() if p.is_dir()]
    return {
        "record": json.loads((run_dir / "record.json").read_text()),
        "email": (run_dir / "email.txt").read_text(),
        "emails": json.loads((run_dir / "emails.json").read_text()),
    }


def runs_json(endpoint_url: str, *filters: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            str(VENV_BIN / "mlpipe-runs"),
            "--endpoint-url",
            endpoint_url,
            "--region",
            "us-east-1",
            "--json",
            *filters,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"},
        check=True,
    )
    return json.loads(result.stdout)


def leftover_containers() -> list[str]:
    return [
        name for prefix in ("local-train-", "local-serve-") for name in containers.list_containers(prefix)
    ]


def left_behind(mark: str) -> dict[int, str]:
    """What a run marked `mark` started and is still running, a moment after it ended."""
    deadline = time.monotonic() + 5
    while (left := marked_processes(RUN_MARK, mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {pid: command for pid, (_, command) in left.items()}


def git_head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with MotoServer() as server:
        yield server.endpoint_url


@pytest.fixture(scope="module")
def happy_run(
    emulator: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict]:
    output = tmp_path_factory.mktemp("happy")
    result = local_run(emulator, output)
    return result, run_files(output)


@pytest.fixture(scope="module")
def failed_run(
    emulator: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict]:
    output = tmp_path_factory.mktemp("failed")
    result = local_run(emulator, output, "--hyperparameters", "max_depth=-1")
    return result, run_files(output)


def test_happy_path_exits_zero_with_a_complete_record(happy_run: tuple) -> None:
    result, files = happy_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = files["record"]
    assert record["status"] == "Completed"
    assert record["commit_id"] == git_head()
    assert record["job_name"].startswith("mlpipe-dev-")
    assert record["trigger"] == "manual"
    assert record["image_uri"].startswith("ml-pipeline-trainer:")
    assert record["image_digest"].startswith("sha256:")
    assert record["data_version"]
    assert record["data_versions"], "the exact S3 version ids of the training data are recorded"
    assert record["model_artifact"].endswith("/output/model.tar.gz")
    assert record["hyperparameters"]
    assert any(name.startswith("validation:") for name in record["metrics"])
    for stage in STAGES:
        assert f"✓ {stage.name}" in result.stdout


def test_happy_path_email_reads_well(happy_run: tuple) -> None:
    _, files = happy_run
    record, email = files["record"], files["email"]
    subject = email.splitlines()[0]
    assert subject.startswith("Subject: [")
    assert "Training Completed" in subject and record["job_name"][:24] in subject
    assert f"({record['commit_id'][:7]}, data v{record['data_version'][:8]})" in subject
    for metric in record["metrics"]:
        assert metric in email
    assert "console.aws.amazon.com" in email
    events = [(e["attributes"]["event"], e["attributes"]["status"]) for e in files["emails"]]
    # Then the package is registered and awaits a person: one email, with the commands that decide.
    assert events == [
        ("training", "InProgress"),
        ("training", "Completed"),
        ("registration", "PendingManualApproval"),
    ]
    assert "mlpipe-runs approve" in files["emails"][-1]["body"]


def test_runs_lists_the_run_from_the_emulator(happy_run: tuple, emulator: str) -> None:
    _, files = happy_run
    job_name = files["record"]["job_name"]
    completed = runs_json(emulator, "--status", "Completed")
    assert job_name in [run["job_name"] for run in completed]
    by_commit = runs_json(emulator, "--commit", files["record"]["commit_id"])
    assert job_name in [run["job_name"] for run in by_commit]


def test_failed_training_fails_the_run_with_the_reason_everywhere(failed_run: tuple, emulator: str) -> None:
    result, files = failed_run
    assert result.returncode != 0
    record = files["record"]
    assert record["status"] == "Failed"
    assert "max_depth" in record["failure_reason"]
    assert "Training Failed" in files["email"].splitlines()[0]
    assert "max_depth" in files["email"]
    assert "max_depth" in result.stdout  # the CodePipeline failure message is shown
    assert record["job_name"] in [run["job_name"] for run in runs_json(emulator, "--status", "Failed")]


def test_a_run_under_seeded_transient_faults_still_completes(emulator: str, tmp_path: Path) -> None:
    """Issue 9 C: `--faults SEED` throttles, fails, drops and applies-then-fails the handlers' calls.
    `--retrain`: the happy run had the same inputs on this emulator, and this run must train, not reuse."""
    result = local_run(emulator, tmp_path, "--faults", "7", "--retrain")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--faults 7:" in result.stdout and " of " in result.stdout
    files = run_files(tmp_path)
    assert files["record"]["status"] == "Completed"
    training = [e["attributes"]["status"] for e in files["emails"] if e["attributes"]["event"] == "training"]
    assert training[-1] == "Completed"


def test_an_unchanged_second_run_against_the_same_emulator_is_a_cache_hit(
    happy_run: tuple, emulator: str, tmp_path: Path
) -> None:
    """Issue 11 part 4: the Data stage keeps the unchanged files' versions, the Train stage starts no job and
    reuses the first run's model, which Smoke-serve serves."""
    first = happy_run[1]["record"]
    result = local_run(emulator, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 uploaded" in result.stdout and "(unchanged, kept)" in result.stdout
    assert "cache hit: no job started" in result.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "Completed" and record["cache_hit_of"]
    assert record["model_artifact"].endswith("/output/model.tar.gz")
    assert record["cache_key"] == first["cache_key"]
    assert not (run_dir / "jobs").exists() and not (run_dir / "emails.json").exists()
    assert "✓ Smoke-serve" in result.stdout


def test_a_tuning_run_trains_its_trials_and_serves_the_best_model(emulator: str, tmp_path: Path) -> None:
    """Issue 11 part 2: `--tune 2` runs a tuning job of two trials with the real image."""
    result = local_run(emulator, tmp_path, "--tune", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "drawn at random" in result.stdout and "<- best" in result.stdout
    files = run_files(tmp_path)
    record = files["record"]
    assert record["kind"] == "tuning" and record["status"] == "Completed" and len(record["job_name"]) <= 32
    assert record["best_training_job"].startswith(record["job_name"])
    assert record["trial_counts"] == {"Completed": 2}
    training = [e for e in files["emails"] if e["attributes"]["event"] == "training"]
    assert [(e["attributes"]["status"], e["attributes"]["job_name"]) for e in training] == [
        ("InProgress", record["job_name"]),
        ("Completed", record["job_name"]),
    ], "one email per transition of the tuning job, none per trial"
    registered = [e for e in files["emails"] if e["attributes"]["event"] == "registration"]
    assert [e["attributes"]["job_name"] for e in registered] == [record["best_training_job"]]
    assert "Tuning Completed" in files["email"].splitlines()[0] and "Best job:" in files["email"]
    assert "✓ Smoke-serve" in result.stdout


def test_approve_then_a_worse_model_fails_the_gate_against_the_approved_package(
    happy_run: tuple, emulator: str, tmp_path: Path
) -> None:
    """Issue 12: `--approve` ends with an approved package and its lineage printed (the happy run's model:
    same inputs, so a cache hit that re-presents its package); a second run with a worse model (one boosting
    round) then fails the quality gate against that approved package, with the reason everywhere."""
    approved_dir, worse_dir = tmp_path / "approve", tmp_path / "worse"
    approved = local_run(emulator, approved_dir, "--approve")
    assert approved.returncode == 0, approved.stdout[-3000:] + approved.stderr[-3000:]
    (run_dir,) = [p for p in approved_dir.iterdir() if p.is_dir()]
    lineage = json.loads((run_dir / "lineage.json").read_text())
    package = lineage["model_package"]["arn"]
    assert lineage["model_package"]["approval_status"] == "Approved"
    assert package in approved.stdout, "the lineage is printed"
    assert "approved as arn:aws:iam::" in approved.stdout and "local-approver-" in approved.stdout
    decisions = lineage["approvals"]
    assert [d["status"] for d in decisions] == ["Approved"]
    assert decisions[0]["decided_by"].split("/")[-1].startswith("local-approver-")
    assert lineage["commit"]["id"] == happy_run[1]["record"]["commit_id"]

    worse = local_run(emulator, worse_dir, "--hyperparameters", "num_round=1")
    assert worse.returncode != 0
    assert "✓ Train" in worse.stdout and "✗ Evaluate" in worse.stdout
    assert "worse than the approved model" in worse.stdout
    (run_dir,) = [p for p in worse_dir.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["gate"]["status"] == "Failed" and record["gate"]["baseline_package_arn"] == package
    emails = json.loads((run_dir / "emails.json").read_text())
    assert [e["attributes"]["status"] for e in emails if e["attributes"].get("event") == "quality-gate"] == [
        "Failed"
    ]


def test_a_two_host_run_trains_one_model_across_both(happy_run: tuple, emulator: str, tmp_path: Path) -> None:
    """Issue 11 part 1: `--instance-count 2` runs two containers (algo-1, algo-2) on a private network that
    train one model together; its validation metric is within 2% of the one-host run's on the same data."""
    result = local_run(emulator, tmp_path, "--instance-count", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = run_files(tmp_path)["record"]
    assert record["status"] == "Completed" and record["instance_count"] == 2
    assert not record.get("cache_hit_of"), "the instance count is part of the cache key"
    one_host = happy_run[1]["record"]["metrics"]["validation:rmse"]
    assert abs(record["metrics"]["validation:rmse"] - one_host) <= 0.02 * one_host
    assert leftover_containers() == []


def test_nothing_is_left_running(happy_run: tuple, failed_run: tuple, tmp_path: Path) -> None:
    assert leftover_containers() == []
    # A run that starts its own emulator stops it again: no process it started outlives it.
    _, mark = new_mark(RUN_MARK)
    result = local_run(None, tmp_path, "--hyperparameters", "max_depth=-1", mark=mark)
    assert result.returncode != 0, result.stdout[-3000:]  # make reports a failed recipe as 2
    assert left_behind(mark) == {}
    assert leftover_containers() == []


def test_ctrl_c_during_training_cleans_up(happy_run: tuple, tmp_path: Path) -> None:
    """Interrupting mid-training stops the training container and the emulator the run started."""
    _, mark = new_mark(RUN_MARK)
    # Enough rounds that training is still running when the interrupt arrives.
    process = subprocess.Popen(
        [
            str(VENV_BIN / "mlpipe-local-run"),
            "--output",
            str(tmp_path),
            "--poll-seconds",
            "0.2",
            "--hyperparameters",
            "num_round=100000",
            "eta=0.001",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "160", RUN_MARK: mark},
        # As from a terminal: a suite started in the background (`make test &`) inherits SIGINT ignored,
        # and Python then installs no KeyboardInterrupt handler at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 300
    for line in process.stdout:
        seen.append(line)
        if "✓ Build" in line or time.monotonic() > deadline:
            break
    # Wait until the training container exists, then interrupt like Ctrl-C.
    while not containers.list_containers("local-train-") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers.list_containers("local-train-"), "".join(seen)[-3000:]
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, "".join(seen)[-2000:] + output[-2000:]
    assert "interrupted" in output
    assert leftover_containers() == []
    assert left_behind(mark) == {}
