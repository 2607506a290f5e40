"""IAM is enforced in the local run (issue 9 C): with one statement removed from a function's synthesized
role, the run fails with AccessDenied naming the missing action, as the same template would fail in AWS.
In-process, with the real stages; the templates are synthesized once for the module.

Each run uses an emulator of its own (a moto server process): moto in this process is the test session's
(`local_cloud`), and a run deploying the same roles there, one statement short, would leave the session's
roles short of it too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlpipe.local import containers
from mlpipe.local.deployment import StackTemplate
from mlpipe.local.emulator import MotoServer
from mlpipe.local.run import STAGES, Stage, run
from mlpipe.local.stages import synth
from mlpipe.local.state import Options, RunState
from mlpipe.project import SAMPLE_DATA
from stacks.functions import START_TRAINING

pytestmark = [pytest.mark.e2e, pytest.mark.image]


@pytest.fixture(scope="module")
def synthesized_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cdk.out")
    synth.synth(out, None, ())
    return out


def remove_statements(pipeline: StackTemplate, handler: str, action: str) -> int:
    """Drop every statement that grants `action` to the role of the function with `handler`."""
    (function,) = [
        r for r in pipeline.of_type("AWS::Lambda::Function").values() if r["Properties"]["Handler"] == handler
    ]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    removed = 0
    for policy in pipeline.of_type("AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        kept = [
            s
            for s in statements
            if action not in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        ]
        removed += len(statements) - len(kept)
        policy["Properties"]["PolicyDocument"]["Statement"] = kept
    return removed


@pytest.mark.parametrize(
    "action",
    [
        "sagemaker:CreateTrainingJob",  # checked by the gateway, for the local SageMaker
        "dynamodb:PutItem",  # checked by moto
    ],
)
def test_a_missing_statement_fails_the_run_with_access_denied_naming_the_action(
    action: str, synthesized_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def synth_without_the_statement(state: RunState) -> None:
        out = state.work / "cdk.out"
        shutil.copytree(synthesized_out, out)
        data, pipeline = (StackTemplate.load(out, f"Training{kind}-dev") for kind in ("Data", "Pipeline"))
        assert remove_statements(pipeline, START_TRAINING.handler, action) >= 1
        state.templates = (data, pipeline)

    stages = tuple(
        Stage(stage.name, synth_without_the_statement) if stage.name == "Synth" else stage for stage in STAGES
    )
    with MotoServer() as emulator:
        options = Options(
            data=SAMPLE_DATA, output=tmp_path, poll_seconds=0.2, endpoint_url=emulator.endpoint_url
        )
        assert run(options, stages) == 1
    out = capsys.readouterr().out
    assert "✗ Train" in out and "AccessDenied" in out and f"not authorized to perform: {action}" in out
    assert containers.list_containers("local-train-") == [], "a job started before the denial is stopped"
