"""`mlpipe-runs lineage` in-process against an emulator, as an operator runs it after a local run: one read
of the training job's record gives the chain commit → image → data → job → metrics → gate → package →
decisions (the handlers that write those fields are tested in tests/lambdas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from pipeline_common import audit

from mlpipe.cli import runs
from mlpipe.local.emulator import MotoServer
from tests.audit_schema import AUDIT_TABLE_SCHEMA

PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/mlpipe-dev/1"
RECORD: dict[str, Any] = {
    "job_name": "mlpipe-dev-run-1",
    "status": "Completed",
    "commit_id": "c" * 40,
    "repo": "example-org/ml",
    "branch": "main",
    "created_at": "2026-11-22T10:00:00+00:00",
    "updated_at": "2026-11-22T10:05:00+00:00",
    "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:cccccccc",
    "image_digest": "sha256:" + "d" * 64,
    "data_version": "0123456789ab",
    "data_manifest": "s3://models/mlpipe-dev-run-1/data-manifest.json",
    "data_object_count": 2,
    "metrics": {"validation:rmse": 0.29},
    "gate": {"status": "Passed", "reason": "no approved model yet: validation:rmse 0.29 meets the floor 0.5"},
    "model_package_arn": PACKAGE,
    "model_package_version": 1,
    "approval_status": "Approved",
    "approvals": [
        {
            "status": "Approved",
            "decided_by": "arn:aws:iam::123456789012:user/alice",
            "decided_at": "2026-11-22T11:00:00Z",
            "reason": "beats the baseline",
        }
    ],
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with MotoServer() as server:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="operator",
            aws_secret_access_key="operator",
        )
        dynamodb.create_table(TableName="audit", **AUDIT_TABLE_SCHEMA)
        dynamodb.put_item(TableName="audit", Item={k: audit.to_attribute(v) for k, v in RECORD.items()})
        yield server.endpoint_url


@pytest.fixture(autouse=True)
def operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def lineage(emulator: str, *args: str) -> list[str]:
    return ["lineage", *args, "--table", "audit", "--endpoint-url", emulator, "--region", "us-east-1"]


def test_a_jobs_lineage_is_one_chain_from_commit_to_decision(
    emulator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runs.main(lineage(emulator, RECORD["job_name"], "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    chain = printed[0] if isinstance(printed, list) else printed
    assert chain["commit"] == {"id": RECORD["commit_id"], "repo": "example-org/ml", "branch": "main"}
    assert chain["image"]["digest"] == RECORD["image_digest"]
    assert chain["data"]["manifest"] == RECORD["data_manifest"] and chain["data"]["objects"] == 2
    assert chain["training_job"]["name"] == RECORD["job_name"]
    assert chain["metrics"] == {"validation:rmse": 0.29}
    assert chain["gate"]["status"] == "Passed"
    assert (
        chain["model_package"]["arn"] == PACKAGE and chain["model_package"]["approval_status"] == "Approved"
    )
    assert [(d["decided_by"], d["reason"]) for d in chain["approvals"]] == [
        ("arn:aws:iam::123456789012:user/alice", "beats the baseline")
    ]


def test_the_text_form_reads_as_one_line_per_link(emulator: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs.main(lineage(emulator, RECORD["job_name"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"commit    {RECORD['commit_id']} on main")
    assert [line.split()[1] for line in lines[1:]] == [
        "image",
        "data",
        "job",
        "metrics",
        "gate",
        "package",
        "approval",
    ]
    assert "approval  Approved by arn:aws:iam::123456789012:user/alice" in lines[-1]
