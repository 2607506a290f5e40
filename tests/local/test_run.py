"""The local run's runner, in-process: stages in order, one-line failures, the summary files, clean-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpipe.local import cli
from mlpipe.local.console import StageFailed
from mlpipe.local.run import STAGES, Stage, run
from mlpipe.local.state import Options, RunState


def options(tmp_path: Path) -> Options:
    return Options(data=tmp_path / "data", output=tmp_path / "out")


def stage_files(tmp_path: Path) -> tuple[list[dict], Path]:
    (work,) = list((tmp_path / "out").iterdir())
    return json.loads((work / "stages.json").read_text()), work


def test_stages_run_in_order_and_share_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []

    def first(state: RunState) -> None:
        seen.append("first")
        state.job_name = "job-1"

    def second(state: RunState) -> None:
        seen.append(f"second saw {state.need('job_name')}")
        state.record = {"job_name": "job-1", "status": "Completed", "metrics": {"validation:rmse": 0.5}}

    assert run(options(tmp_path), (Stage("First", first), Stage("Second", second))) == 0
    assert seen == ["first", "second saw job-1"]
    stages, work = stage_files(tmp_path)
    assert [(s["stage"], s["outcome"]) for s in stages] == [("First", "ok"), ("Second", "ok")]
    assert json.loads((work / "record.json").read_text())["status"] == "Completed"
    out = capsys.readouterr().out
    assert "✓ First" in out and "validation:rmse=0.5" in out and "local run succeeded" in out


def test_a_failed_stage_stops_the_run_with_one_line_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cleaned: list[str] = []
    ran_after: list[str] = []

    def starts_something(state: RunState) -> None:
        state.cleanup.callback(cleaned.append, "stopped")

    def fails(state: RunState) -> None:
        raise StageFailed("the data has no train/ folder")

    stages = (
        Stage("Start", starts_something),
        Stage("Fail", fails),
        Stage("Never", lambda s: ran_after.append("ran")),
    )
    assert run(options(tmp_path), stages) == 1
    assert cleaned == ["stopped"] and ran_after == []
    out = capsys.readouterr().out
    assert "✗ Fail the data has no train/ folder" in out and "local run FAILED" in out
    stages_json, _ = stage_files(tmp_path)
    assert [s["outcome"] for s in stages_json] == ["ok", "failed"]


def test_an_unexpected_error_is_a_failed_stage_with_its_traceback_saved(tmp_path: Path) -> None:
    def crashes(state: RunState) -> None:
        raise KeyError("TOPIC_ARN")

    assert run(options(tmp_path), (Stage("Crash", crashes),)) == 1
    _, work = stage_files(tmp_path)
    assert "KeyError" in (work / "traceback.txt").read_text()


def test_a_stage_that_needs_what_no_stage_made_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(options(tmp_path), (Stage("Train", lambda s: s.need("image")),)) == 1
    assert "an earlier stage did not provide image" in capsys.readouterr().out


def test_the_pipeline_stages_are_listed_in_pipeline_order() -> None:
    assert [stage.name for stage in STAGES] == [
        "Source",
        "Synth",
        "Emulator",
        "Data",
        "Build",
        "Train",
        "Record and notify",
        "Evaluate",
        "Register",
        "Approval",
        "Smoke-serve",
        "Deploy",  # with --deploy: staging, its golden test, production; otherwise skipped
    ]


def test_arguments_parse_into_options(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    parsed = cli.parse_args(["--data", str(tmp_path), "--hyperparameters", "max_depth=4", "eta=0.1"])
    assert parsed.data == tmp_path and parsed.hyperparameter_overrides == {"max_depth": "4", "eta": "0.1"}
    with pytest.raises(SystemExit):
        cli.parse_args(["--data", str(tmp_path), "--hyperparameters", "max_depth"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--data", str(tmp_path / "missing")])


def test_approval_options_parse_and_exclude_each_other(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    data = ["--data", str(tmp_path)]
    assert cli.parse_args(data).approve is False and cli.parse_args(data).approval_wait == 0
    assert cli.parse_args([*data, "--approve"]).approve is True
    assert cli.parse_args([*data, "--approval-wait", "30"]).approval_wait == 30
    for bad in (["--approve", "--approval-wait", "5"], ["--approval-wait", "-1"]):
        with pytest.raises(SystemExit):
            cli.parse_args([*data, *bad])


def test_tune_and_retrain_options(tmp_path: Path) -> None:
    from mlpipe.local.tuning import EXAMPLE_TUNING
    from stacks.config import PipelineConfig, read_json_context

    (tmp_path / "train").mkdir()
    parsed = cli.parse_args(["--data", str(tmp_path), "--tune", "3", "--retrain"])
    assert parsed.retrain is True
    (item,) = parsed.context
    key, _, value = item.partition("=")
    tuning = json.loads(value)
    assert key == "tuning" and tuning == {**EXAMPLE_TUNING, "max_jobs": 3, "max_parallel_jobs": 2}
    # What synth gets is a valid `tuning` for the config.
    config = PipelineConfig.from_mapping({**read_json_context(Path(cli.ROOT) / "cdk.json"), "tuning": value})
    assert config.training.tuning is not None and config.training.tuning.max_jobs == 3
    assert cli.parse_args(["--data", str(tmp_path)]).retrain is False
    with pytest.raises(SystemExit):
        cli.parse_args(["--data", str(tmp_path), "--tune", "2", "--context", 'tuning={"max_jobs": 2}'])
    with pytest.raises(SystemExit):
        cli.parse_args(["--data", str(tmp_path), "--tune", "0"])


def test_instance_count_becomes_the_configured_instance_count(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    assert cli.parse_args(["--data", str(tmp_path), "--instance-count", "3"]).context == (
        "training_instance_count=3",
    )
    for bad in (
        ["--instance-count", "0"],
        ["--instance-count", "2", "--context", "training_instance_count=3"],
    ):
        with pytest.raises(SystemExit):
            cli.parse_args(["--data", str(tmp_path), *bad])
