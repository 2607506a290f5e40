"""The lineage goes on past the approval: golden tests and deployments, with a rollback's alarm."""

from __future__ import annotations

from mlpipe.cli.lineage import lineage, render

RECORD = {
    "job_name": "mlpipe-dev-job",
    "commit_id": "abc1234",
    "golden_test:v1": {"passed": True, "rows": 20, "p99_ms": 16.7},
    "deployment:production:v2": {
        "stage": "production",
        "model_package_version": 2,
        "status": "RolledBack",
        "endpoint": "mlpipe-dev-production",
        "started_at": "2026-11-23T10:05:00.000+00:00",
        "alarm": "mlpipe-dev-production-invocation-5xx",
        "previous_config": "mlpipe-dev-production-v1",
    },
    "deployment:staging:v1": {
        "stage": "staging",
        "model_package_version": 1,
        "status": "InService",
        "endpoint": "mlpipe-dev-staging",
        "started_at": "2026-11-23T10:00:00.000+00:00",
        "ended_at": "2026-11-23T10:03:00.000+00:00",
    },
}


def test_deployments_are_in_the_order_they_started_and_a_rollback_names_its_alarm() -> None:
    chain = lineage(RECORD)
    assert [d["stage"] for d in chain["deployments"]] == ["staging", "production"]
    assert chain["golden_tests"] == [{"passed": True, "rows": 20, "p99_ms": 16.7, "key": "golden_test:v1"}]
    lines = render(chain).splitlines()
    assert lines[-3:] == [
        "  ↳ golden    v1 passed (20 rows, p99 16.7 ms)",
        "  ↳ deploy    staging v1 InService on mlpipe-dev-staging at 2026-11-23T10:03:00.000+00:00",
        "  ↳ deploy    production v2 RolledBack on mlpipe-dev-production at 2026-11-23T10:05:00.000+00:00, alarm "
        "mlpipe-dev-production-invocation-5xx fired; back on mlpipe-dev-production-v1",
    ]


def test_a_record_without_deployments_keeps_its_lineage() -> None:
    chain = lineage({"job_name": "j"})
    assert chain["deployments"] == [] and chain["golden_tests"] == []
    assert "deploy" not in render(chain)
