"""`runs` lists audit records through the table's indexes, with filters, JSON and clear errors."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.client import BaseClient
from pipeline_common import audit

from mlpipe.cli import runs
from tests.audit_schema import AUDIT_TABLE_SCHEMA

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def audit_table(dynamodb: Any, name: str = "audit") -> Any:
    return dynamodb.create_table(TableName=name, **AUDIT_TABLE_SCHEMA)


def record(job: str, status: str, commit: str, minute: int, **extra: Any) -> dict[str, Any]:
    stamp = f"2026-11-22T10:{minute:02d}:00+00:00"
    return {
        "job_name": job,
        "status": status,
        "commit_id": commit,
        "created_at": stamp,
        "updated_at": stamp,
        "started_at": stamp,
        "data_version": "d1",
        **extra,
    }


@pytest.fixture
def table(emulated: Any, local_cloud: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An audit table of its own in the session's local AWS, and `runs` pointed at it (the CLI's
    arguments for it), with the harness's credentials, as a person with access would run it."""
    name = emulated.audit_table()
    for item in (
        record("job-1", "Completed", COMMIT_A, 1, ended_at="2026-11-22T10:03:05+00:00"),
        record("job-2", "Failed", COMMIT_A, 2, failure_reason="bad depth"),
        record("job-3", "InProgress", COMMIT_B, 3),
    ):
        emulated.client("dynamodb").put_item(
            TableName=name, Item={k: audit.to_attribute(v) for k, v in item.items()}
        )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", local_cloud.harness.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", local_cloud.harness.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    return ["--endpoint-url", local_cloud.moto_url, "--table", name, "--region", "us-east-1"]


def run_json(capsys: pytest.CaptureFixture[str], table: list[str], *args: str) -> list[dict[str, Any]]:
    assert runs.main([*args, *table, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lists_newest_first_across_statuses_without_scanning(
    table: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    operations: list[str] = []
    make_api_call = BaseClient._make_api_call

    def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        operations.append(operation)
        return make_api_call(client, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", recording):
        listed = run_json(capsys, table)
    assert [r["job_name"] for r in listed] == ["job-3", "job-2", "job-1"]
    assert "Scan" not in operations
    assert operations.count("Query") == len(runs.STATUSES)


def test_filters_by_status_commit_and_limit(table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert [r["job_name"] for r in run_json(capsys, table, "--status", "Failed")] == ["job-2"]
    assert [r["job_name"] for r in run_json(capsys, table, "--commit", COMMIT_A)] == ["job-2", "job-1"]
    assert [
        r["job_name"] for r in run_json(capsys, table, "--commit", COMMIT_A, "--status", "Completed")
    ] == ["job-1"]
    assert [r["job_name"] for r in run_json(capsys, table, "--limit", "1")] == ["job-3"]


def test_table_output_shows_short_commit_and_duration(table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs.main(["--status", "Completed", *table]) == 0
    out = capsys.readouterr().out
    assert "job-1" in out and "aaaaaaa" in out and "2m05s" in out and "2026-11-22 10:01" in out


def test_unresolvable_short_commit_is_a_clear_error(table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs.main(["--commit", "zzzzzzz", *table]) == 2
    assert "full 40-character SHA" in capsys.readouterr().err


def test_missing_or_ambiguous_table_is_a_clear_error(
    moto_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by its key schema and indexes, in an emulator of its own (the shared one has many)."""
    url = ["--endpoint-url", moto_server.endpoint_url, "--region", "us-east-1"]
    assert runs.main(url) == 2
    assert "no audit table found" in capsys.readouterr().err
    dynamodb = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=moto_server.endpoint_url)
    audit_table(dynamodb, "audit-dev")
    audit_table(dynamodb, "audit-prod")
    assert runs.main(url) == 2
    assert "audit-dev, audit-prod" in capsys.readouterr().err
    assert runs.main([*url, "--table", "audit-prod", "--json"]) == 0


def test_headline_metric_prefers_test_then_validation() -> None:
    assert runs.headline_metric({"train:rmse": 1, "validation:rmse": 0.123456}) == "validation:rmse=0.1235"
    assert (
        runs.headline_metric({"train:rmse": 1, "validation:rmse": 0.1, "test:rmse": 0.2}) == "test:rmse=0.2"
    )
    assert runs.headline_metric(None) == "-"


def test_the_status_column_says_cache_hits_tuning_jobs_and_trials() -> None:
    from mlpipe.cli.runs import status_text

    assert status_text({"status": "Completed"}) == "Completed"
    assert status_text({"status": "Completed", "cache_hit_of": "mlpipe-dev-a"}) == (
        "Completed (cache hit of mlpipe-dev-a)"
    )
    assert status_text({"status": "InProgress", "kind": "tuning"}) == "InProgress (tuning)"
    assert status_text({"status": "Failed", "tuning_job": "mlpipe-dev-t"}) == "Failed (trial)"
