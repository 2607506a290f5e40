"""checkov on the synthesized templates: nothing fails, and every skip is one we wrote down with a reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stacks.checkov_skips import METADATA_KEY, REASONS
from tests.stacks.conftest import Synthesized

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))

# (resource type, logical id hint, check): the README's checkov table.
EXPECTED_SKIPS = {
    ("AWS::S3::Bucket", "AccessLogBucket", "CKV_AWS_18"),
    ("AWS::ECR::Repository", "BuildCacheRepository", "CKV_AWS_51"),
    *(
        ("AWS::Lambda::Function", f"{name}Function", check)
        for name in (
            "StartTraining",
            "RecordStatus",
            "DataTrigger",
            "EvaluateModel",
            "RegisterModel",
            "RecordApproval",
        )
        for check in ("CKV_AWS_117", "CKV_AWS_173")
    ),
    ("AWS::Lambda::Function", "DataTriggerFunction", "CKV_AWS_116"),
    # The deploy stack: its functions, and no cache on the APIs' stages.
    *(
        ("AWS::Lambda::Function", f"{name}Function", check)
        for name in ("StartDeploy", "DeployModel", "GoldenTest", "RecordDeployment")
        for check in ("CKV_AWS_117", "CKV_AWS_173")
    ),
    *(
        ("AWS::ApiGateway::Stage", f"{api}ApiDeploymentStage", "CKV_AWS_120")
        for api in ("Staging", "Production")
    ),
}


def skips(synthesized: Synthesized) -> dict[tuple[str, str, str], str]:
    """(type, logical id, check) -> comment, from the templates' resource metadata."""
    found = {}
    for template in (synthesized.data_json, synthesized.pipeline_json, synthesized.deploy_json):
        for lid, resource in template["Resources"].items():
            for entry in resource.get("Metadata", {}).get(METADATA_KEY, {}).get("skip", []):
                found[(resource["Type"], lid, entry["id"])] = entry["comment"]
    return found


def test_skips_are_exactly_the_expected_ones_each_with_its_reason(synthesized: Synthesized) -> None:
    found = skips(synthesized)
    matched = set()
    for resource_type, lid, check in found:
        rows = [
            row for row in EXPECTED_SKIPS if row[0] == resource_type and row[1] in lid and row[2] == check
        ]
        assert len(rows) == 1, (resource_type, lid, check)
        matched |= set(rows)
    assert matched == EXPECTED_SKIPS
    assert len(found) == len(EXPECTED_SKIPS)
    for (_, lid, check), comment in found.items():
        assert comment == REASONS[check], (lid, check)
    assert set(REASONS) == {check for _, _, check in EXPECTED_SKIPS}, "a reason nobody uses"


def run_checkov(paths: tuple[str, ...]) -> dict[str, Any]:
    args = [str(CHECKOV), "--framework", "cloudformation", "--skip-download", "--output", "json"]
    for path in paths:
        args += ["-f", path]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == (1 if report["summary"]["failed"] else 0), result.stderr[-2000:]
    return report  # type: ignore[no-any-return]


@pytest.mark.skipif(
    not CHECKOV.exists(), reason="checkov is installed into .venv-checkov by make test / make lint"
)
def test_checkov_passes_the_synthesized_templates_with_only_the_recorded_skips(
    synthesized: Synthesized,
) -> None:
    report = run_checkov(synthesized.template_paths)
    # Every template parsed, every resource scanned: a run that read nothing would pass vacuously.
    resources = sum(
        len(template["Resources"])
        for template in (synthesized.data_json, synthesized.pipeline_json, synthesized.deploy_json)
    )
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] == resources
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    skipped = {(c["resource"].split(".", 1)[1], c["check_id"]) for c in report["results"]["skipped_checks"]}
    assert skipped == {(lid, check) for _, lid, check in skips(synthesized)}
