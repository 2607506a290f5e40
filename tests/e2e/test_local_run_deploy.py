"""`make local-run ARGS="--approve --deploy"`: from source to a model answering through the local API.

The approved package goes to a local staging endpoint (the real image's `serve`), its golden set goes
through the staging API, and it is deployed to production; the audit record has both deployments and the
golden test, and one email each was sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.image]


def local_run(output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The local run's console script's module, from this checkout (not `make`, whose setup would reinstall
    the shared venv's editable package from here)."""
    path = os.pathsep.join(str(p) for p in (ROOT, ROOT / "lambdas", ROOT / "container"))
    return subprocess.run(
        [sys.executable, "-m", "mlpipe.local.cli", "--output", str(output), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "160", "PYTHONPATH": path},
        check=False,
    )


def test_approve_and_deploy_ends_with_staging_tested_and_production_serving(tmp_path: Path) -> None:
    """With --batch-transform: then the transform job deploy-model starts runs on the real image, its output
    is in S3 (equal to /invocations: tests/local/test_transform_and_serving.py), recorded and emailed."""
    result = local_run(tmp_path, "--approve", "--deploy", "--batch-transform")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "✓ Deploy" in result.stdout
    assert "golden test passed: 20 rows" in result.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["deployment:staging:v1"]["status"] == "InService"
    assert record["deployment:production:v1"]["status"] == "InService"
    assert record["golden_test:v1"]["passed"] is True
    apis = json.loads((run_dir / "endpoints.json").read_text())["apis"]
    assert apis["staging"].endswith("/v1/invocations") and apis["production"].endswith("/v1/invocations")
    for subject in (
        "v1 is serving in staging",
        "v1 golden test passed on staging",
        "v1 is serving in production",
    ):
        assert result.stdout.count(f"email [mlpipe/dev] {subject}") == 1, subject  # one email each
    assert "batch input: 500 validation rows at s3://" in result.stdout
    (transform,) = [key for key in record if key.startswith("transform:")]
    assert record[transform]["status"] == "Completed"
    assert f"transform job {transform.removeprefix('transform:')}: Completed, output under" in result.stdout
    name = transform.removeprefix("transform:")
    assert result.stdout.count(f"email [mlpipe/dev] transform job {name} completed") == 1


def test_batch_transform_without_deploy_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = local_run(tmp_path, "--approve", "--batch-transform")
    assert result.returncode != 0
    assert "--batch-transform runs after the production deploy: use it with --deploy" in result.stderr


def test_deploy_without_approve_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = local_run(tmp_path, "--deploy")
    assert result.returncode != 0
    assert "--deploy deploys the approved package: use it with --approve" in result.stderr
