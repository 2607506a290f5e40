"""`mlpipe-runs endpoints` in-process against the session's emulator: which package each endpoint serves
now, from the `deployment:*` entries the deploy handlers write (written here with their own function,
`deployments.record_deployment`), read through the `by-status` index only."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from botocore.client import BaseClient
from pipeline_common import audit, aws, deployments, endpoints

from mlpipe.cli import runs
from mlpipe.cli.endpoints import endpoint_views

PROJECT, ENV = "mlpipe", "dev"
GROUP_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/mlpipe-dev"
ALARM = endpoints.alarm_names(endpoints.endpoint_name(PROJECT, ENV, endpoints.PRODUCTION))[0]


def stamp(minute: int) -> str:
    return f"2026-11-23T10:{minute:02d}:00.000+00:00"


class Trail:
    """An audit table of its own in the session's local AWS, with runs and their deployments as the
    handlers record them, and the CLI's arguments for it."""

    def __init__(self, emulated: Any, local_cloud: Any) -> None:
        self.emulated = emulated
        self.table = emulated.audit_table()
        self.args = ["--endpoint-url", local_cloud.moto_url, "--table", self.table, "--region", "us-east-1"]

    def run(self, version: int, status: str = "Completed") -> str:
        """A training run that registered package v`version`; its job name."""
        job = f"mlpipe-dev-run-{version}"
        record = {
            "job_name": job,
            "status": status,
            "commit_id": f"{version}" * 40,
            "branch": "main",
            "created_at": stamp(version),
            "updated_at": stamp(version),
            "model_package_arn": f"{GROUP_ARN}/{version}",
            "model_package_version": version,
            "approval_status": "Approved",
        }
        self.emulated.client("dynamodb").put_item(
            TableName=self.table, Item={k: audit.to_attribute(v) for k, v in record.items()}
        )
        return job

    def deploy(
        self, job: str, stage: str, version: int, minute: int, outcome: str | None, **fields: Any
    ) -> None:
        """Start a deployment (deploy-model's first write), then, given an outcome, finish it
        (deployments.finish's write, without its email)."""
        endpoint = endpoints.endpoint_name(PROJECT, ENV, stage)
        with aws.use_clients({"dynamodb": self.emulated.client("dynamodb")}):
            deployments.record_deployment(
                self.table,
                job,
                stage,
                version,
                {
                    "status": deployments.STARTED,
                    "endpoint": endpoint,
                    "endpoint_config": endpoints.endpoint_config_name(endpoint, version),
                    "model_package_arn": f"{GROUP_ARN}/{version}",
                    "started_at": stamp(minute),
                },
            )
            if outcome:
                deployments.record_deployment(
                    self.table,
                    job,
                    stage,
                    version,
                    {"status": outcome, "ended_at": stamp(minute + 3), **fields},
                )


@pytest.fixture
def trail(emulated: Any, local_cloud: Any, monkeypatch: pytest.MonkeyPatch) -> Trail:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", local_cloud.harness.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", local_cloud.harness.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    return Trail(emulated, local_cloud)


def shown(trail: Trail, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """The text table's cells, by endpoint name."""
    assert runs.main(["endpoints", *trail.args]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0].startswith(f"{PROJECT}-{ENV}-"):
            rows[cells[0]] = cells
    return rows


def as_json(trail: Trail, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert runs.main(["endpoints", *trail.args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


STAGING = endpoints.endpoint_name(PROJECT, ENV, endpoints.STAGING)
PRODUCTION = endpoints.endpoint_name(PROJECT, ENV, endpoints.PRODUCTION)


def test_the_newest_in_service_deployment_is_current_read_without_a_scan(
    trail: Trail, capsys: pytest.CaptureFixture[str]
) -> None:
    trail.deploy(trail.run(1), endpoints.STAGING, 1, 10, deployments.IN_SERVICE)
    trail.deploy(trail.run(2), endpoints.STAGING, 2, 20, deployments.IN_SERVICE)
    operations: list[str] = []
    make_api_call = BaseClient._make_api_call

    def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        operations.append(operation)
        return make_api_call(client, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", recording):
        rows = shown(trail, capsys)
    assert rows == {
        STAGING: [STAGING, "staging", "v2", "mlpipe-dev-run-2", "2222222", "2026-11-23 10:23", "-"]
    }
    assert operations == ["Query"]


def test_a_rolled_back_deployment_leaves_the_previous_package_current_and_is_the_last_attempt(
    trail: Trail, capsys: pytest.CaptureFixture[str]
) -> None:
    trail.deploy(trail.run(1), endpoints.PRODUCTION, 1, 10, deployments.IN_SERVICE)
    trail.deploy(
        trail.run(2),
        endpoints.PRODUCTION,
        2,
        20,
        deployments.ROLLED_BACK,
        alarm=ALARM,
        previous_config=endpoints.endpoint_config_name(PRODUCTION, 1),
    )
    assert shown(trail, capsys)[PRODUCTION] == [
        PRODUCTION,
        "production",
        "v1",
        "mlpipe-dev-run-1",
        "1111111",
        "2026-11-23 10:13",
        f"v2 RolledBack 2026-11-23 10:23 (alarm {ALARM})",
    ]
    (view,) = as_json(trail, capsys)
    assert view["current"]["model_package_version"] == 1
    assert view["last_attempt"]["status"] == deployments.ROLLED_BACK
    assert (
        view["last_attempt"]["alarm"] == ALARM and view["last_attempt"]["training_job"] == "mlpipe-dev-run-2"
    )
    assert view["deploying"] is None


def test_a_newer_deployment_under_way_is_shown_as_deploying(
    trail: Trail, capsys: pytest.CaptureFixture[str]
) -> None:
    trail.deploy(trail.run(1), endpoints.STAGING, 1, 10, deployments.IN_SERVICE)
    trail.deploy(trail.run(2), endpoints.STAGING, 2, 20, outcome=None)
    row = shown(trail, capsys)[STAGING]
    assert row[2] == "v1" and row[-1] == "deploying v2 since 2026-11-23 10:20"
    (view,) = as_json(trail, capsys)
    assert view["deploying"]["status"] == deployments.STARTED and view["last_attempt"] is None


def test_staging_and_production_are_listed_separately(
    trail: Trail, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = trail.run(1), trail.run(2)
    trail.deploy(first, endpoints.STAGING, 1, 10, deployments.IN_SERVICE)
    trail.deploy(first, endpoints.PRODUCTION, 1, 15, deployments.IN_SERVICE)
    trail.deploy(second, endpoints.STAGING, 2, 20, deployments.IN_SERVICE)
    trail.deploy(
        second, endpoints.PRODUCTION, 2, 25, deployments.FAILED, reason="the container did not start"
    )
    rows = shown(trail, capsys)
    assert list(rows) == [STAGING, PRODUCTION]
    assert rows[STAGING][1:3] == ["staging", "v2"] and rows[STAGING][-1] == "-"
    assert rows[PRODUCTION][1:3] == ["production", "v1"]
    assert rows[PRODUCTION][-1] == "v2 Failed 2026-11-23 10:28"
    views = as_json(trail, capsys)
    assert [(v["endpoint"], v["current"]["model_package_version"]) for v in views] == [
        (STAGING, 2),
        (PRODUCTION, 1),
    ]
    assert views[1]["last_attempt"]["reason"] == "the container did not start"


def test_json_carries_the_current_packages_whole_lineage(
    trail: Trail, capsys: pytest.CaptureFixture[str]
) -> None:
    job = trail.run(1)
    trail.deploy(job, endpoints.STAGING, 1, 10, deployments.IN_SERVICE)
    (view,) = as_json(trail, capsys)
    assert view["endpoint"] == STAGING and view["stage"] == endpoints.STAGING
    assert view["current"]["training_job"] == job and view["current"]["commit_id"] == "1" * 40
    assert "rank" not in view["current"]
    chain = view["lineage"]
    assert chain["training_job"]["name"] == job and chain["commit"]["id"] == "1" * 40
    assert chain["model_package"]["arn"] == f"{GROUP_ARN}/1"
    assert [(d["stage"], d["status"]) for d in chain["deployments"]] == [("staging", "InService")]


def test_no_deployment_is_one_line_and_success(trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    trail.run(1)
    assert runs.main(["endpoints", *trail.args]) == 0
    out = capsys.readouterr().out
    assert out == f"no deployment recorded in audit table {trail.table} (Completed runs read: 1)\n"
    assert as_json(trail, capsys) == []


def test_only_attempts_newer_than_the_current_package_are_shown() -> None:
    """An older failure, or a start left unfinished before a later outcome, says nothing about now."""

    def entry(version: int, status: str, minute: int) -> dict[str, Any]:
        return {
            "stage": "production",
            "model_package_version": version,
            "status": status,
            "endpoint": PRODUCTION,
            "started_at": stamp(minute),
        }

    record = {
        "job_name": "j",
        deployments.deployment_attribute("production", 1): entry(1, deployments.FAILED, 1),
        deployments.deployment_attribute("production", 2): entry(2, deployments.STARTED, 2),
        deployments.deployment_attribute("production", 3): entry(3, deployments.IN_SERVICE, 3),
        deployments.deployment_attribute("production", 4): entry(4, deployments.STARTED, 4),
        deployments.deployment_attribute("production", 5): entry(5, deployments.ROLLED_BACK, 5),
    }
    (view,) = endpoint_views([record])
    assert view["current"]["model_package_version"] == 3
    assert view["last_attempt"]["model_package_version"] == 5
    assert view["deploying"] is None  # v4's start is older than v5's rollback: it never finished
    (view,) = endpoint_views(
        [{**record, deployments.deployment_attribute("production", 5): entry(5, deployments.FAILED, 0)}]
    )
    assert view["current"]["model_package_version"] == 3
    assert view["last_attempt"] is None and view["deploying"]["model_package_version"] == 4
