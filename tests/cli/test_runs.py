"""`runs` lists audit records through the table's indexes, with filters, JSON and clear errors."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws

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
def table() -> Any:
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        table = audit_table(dynamodb)
        table.put_item(Item=record("job-1", "Completed", COMMIT_A, 1, ended_at="2026-11-22T10:03:05+00:00"))
        table.put_item(Item=record("job-2", "Failed", COMMIT_A, 2, failure_reason="bad depth"))
        table.put_item(Item=record("job-3", "InProgress", COMMIT_B, 3))
        yield table


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert runs.main([*args, "--json", "--region", "us-east-1"]) == 0
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
        listed = run_json(capsys)
    assert [r["job_name"] for r in listed] == ["job-3", "job-2", "job-1"]
    assert "Scan" not in operations
    assert operations.count("Query") == len(runs.STATUSES)


def test_filters_by_status_commit_and_limit(table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert [r["job_name"] for r in run_json(capsys, "--status", "Failed")] == ["job-2"]
    assert [r["job_name"] for r in run_json(capsys, "--commit", COMMIT_A)] == ["job-2", "job-1"]
    assert [r["job_name"] for r in run_json(capsys, "--commit", COMMIT_A, "--status", "Completed")] == [
        "job-1"
    ]
    assert [r["job_name"] for r in run_json(capsys, "--limit", "1")] == ["job-3"]


def test_table_output_shows_short_commit_and_duration(table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs.main(["--status", "Completed", "--region", "us-east-1"]) == 0
    out = capsys.readouterr().out
    assert "job-1" in out and "aaaaaaa" in out and "2m05s" in out and "2026-11-22 10:01" in out


def test_unresolvable_short_commit_is_a_clear_error(table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs.main(["--commit", "zzzzzzz", "--region", "us-east-1"]) == 2
    assert "full 40-character SHA" in capsys.readouterr().err


def test_missing_or_ambiguous_table_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        assert runs.main(["--region", "us-east-1"]) == 2
        assert "no audit table found" in capsys.readouterr().err
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        audit_table(dynamodb, "audit-dev")
        audit_table(dynamodb, "audit-prod")
        assert runs.main(["--region", "us-east-1"]) == 2
        assert "audit-dev, audit-prod" in capsys.readouterr().err
        assert runs.main(["--region", "us-east-1", "--table", "audit-prod", "--json"]) == 0


def test_headline_metric_prefers_validation() -> None:
    assert runs.headline_metric({"train:rmse": 1, "validation:rmse": 0.123456}) == "validation:rmse=0.1235"
    assert runs.headline_metric(None) == "-"
