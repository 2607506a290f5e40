"""`mlpipe-runs approve|reject` in-process, as a person runs them: with their own IAM user's
credentials, through the local AWS's gateway (the model registry stand-in, and moto behind it), on packages
the real Register handler made. The decision lands in the audit trail through record-approval."""

from __future__ import annotations

import pytest
from pipeline_common import model_package

from mlpipe.cli import runs
from mlpipe.local.iam import Credentials
from tests.conftest import REGION
from tests.lambda_fixtures import Lambdas

METRICS = {"validation:rmse": 0.29, "train:rmse": 0.12}


def as_person(monkeypatch: pytest.MonkeyPatch, person: Credentials) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", person.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", person.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def cli(lambdas: Lambdas, *args: str) -> list[str]:
    return [*args, "--group", lambdas.group, "--endpoint-url", lambdas.cloud.gateway.url, "--region", REGION]


@pytest.mark.parametrize(
    ("command", "status"), [("approve", model_package.APPROVED), ("reject", model_package.REJECTED)]
)
def test_a_decision_by_version_is_made_as_the_caller_and_recorded_with_the_reason(
    lambdas: Lambdas,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    status: str,
) -> None:
    run = lambdas.run_pipeline(METRICS)
    person = lambdas.approver()
    as_person(monkeypatch, person)
    assert runs.main(cli(lambdas, command, "1", "--reason", "checked the residuals")) == 0
    assert status in capsys.readouterr().out
    lambdas.deliver_package_events()
    record = lambdas.record_of(run.job_name)
    assert record["approval_status"] == status
    assert (
        record["approval_decided_by"] == person.arn and record["approval_reason"] == "checked the residuals"
    )


def test_an_unknown_version_or_an_empty_reason_is_a_clear_error(
    lambdas: Lambdas, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lambdas.run_pipeline(METRICS)
    as_person(monkeypatch, lambdas.approver())
    assert runs.main(cli(lambdas, "approve", "7", "--reason", "why not")) == 2
    assert f"model package group {lambdas.group} has no version 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runs.main(cli(lambdas, "reject", "1", "--reason", "  "))
