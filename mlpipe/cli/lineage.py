"""Where did this model come from? A run's lineage, from its one audit record.

commit → image digest → data manifest → training job → metrics → gate → package → approval decisions →
golden tests and deployments (each `deployment:<stage>:v<N>` entry, with a rollback's alarm).
Everything is on the training job's record (the later stages add to it), so a lineage is one read once
the record is found: by job name (GetItem), by package (DescribeModelPackage names its training job), or
by commit (the `by-commit` index). Used by `mlpipe-runs lineage` and printed at the end of a local run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def lineage(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record, arranged as the chain a model comes from (unknown links are None)."""
    gate = record.get("gate")
    package = None
    if record.get("model_package_arn"):
        package = {
            "arn": record.get("model_package_arn"),
            "version": record.get("model_package_version"),
            "group": record.get("model_package_group"),
            "registered_at": record.get("registered_at"),
            "approval_status": record.get("approval_status"),
        }
    return {
        "commit": {"id": record.get("commit_id"), "repo": record.get("repo"), "branch": record.get("branch")},
        "image": {"uri": record.get("image_uri"), "digest": record.get("image_digest")},
        "data": {
            "version": record.get("data_version"),
            "manifest": record.get("data_manifest"),
            "objects": record.get("data_object_count"),
            "location": f"s3://{record['data_bucket']}/{record.get('data_prefix', '')}"
            if record.get("data_bucket")
            else None,
        },
        "training_job": {
            "name": record.get("job_name"),
            "status": record.get("status"),
            "failure_reason": record.get("failure_reason"),
            "instance_type": record.get("instance_type"),
            "hyperparameters": record.get("hyperparameters"),
            "started_at": record.get("started_at"),
            "ended_at": record.get("ended_at"),
            "model_artifact": record.get("model_artifact"),
        },
        "metrics": record.get("metrics") or {},
        "gate": dict(gate) if isinstance(gate, Mapping) else None,
        "evaluation": record.get("evaluation_uri"),
        "model_package": package,
        "approvals": list(record.get("approvals") or []),
        "golden_tests": [dict(record[k], key=k) for k in sorted(record) if k.startswith("golden_test:")],
        # Oldest first: the order the stages ran in, whichever stage or version.
        "deployments": sorted(
            (dict(record[k]) for k in record if k.startswith("deployment:")),
            key=lambda entry: str(entry.get("started_at") or ""),
        ),
        "pipeline": {
            "name": record.get("pipeline_name"),
            "execution_id": record.get("pipeline_execution_id"),
            "trigger": record.get("trigger"),
        },
    }


def render(chain: Mapping[str, Any]) -> str:
    """A few readable lines, one per link, for a terminal."""
    commit, image, data, job = chain["commit"], chain["image"], chain["data"], chain["training_job"]
    lines = [
        f"commit    {commit['id'] or '?'} on {commit['branch'] or '?'} ({commit['repo'] or '?'})",
        f"image     {image['uri'] or '?'}" + (f" @ {image['digest']}" if image["digest"] else ""),
        f"data      v{data['version'] or '?'}"
        + (f", {data['objects']} objects" if data["objects"] is not None else "")
        + (f", manifest {data['manifest']}" if data["manifest"] else ""),
        f"job       {job['name']} {job['status'] or '?'}"
        + (f" ({job['failure_reason']})" if job["failure_reason"] else "")
        + (f", model {job['model_artifact']}" if job["model_artifact"] else ""),
        "metrics   " + (", ".join(f"{k}={float(v):.4g}" for k, v in sorted(chain["metrics"].items())) or "-"),
    ]
    gate = chain["gate"]
    lines.append(f"gate      {gate['status']}: {gate['reason']}" if gate else "gate      not evaluated")
    package = chain["model_package"]
    lines.append(
        f"package   v{package['version']} {package['approval_status']} ({package['arn']})"
        if package
        else "package   not registered"
    )
    approvals = chain["approvals"]
    if not approvals:
        lines.append("approval  " + ("awaiting a decision" if package else "-"))
    for decision in approvals:
        superseded = " (superseded before it was read)" if decision.get("superseded") else ""
        reason = f': "{decision["reason"]}"' if decision.get("reason") else ""
        lines.append(
            f"approval  {decision.get('status')} by {decision.get('decided_by')} at {decision.get('decided_at')}"
            f"{reason}{superseded}"
        )
    for test in chain.get("golden_tests", []):
        outcome = "passed" if test.get("passed") else f"failed: {test.get('reason')}"
        lines.append(
            f"golden    {test['key'].split(':', 1)[1]} {outcome} ({test.get('rows')} rows, p99 {test.get('p99_ms')} ms)"
        )
    for entry in chain.get("deployments", []):
        rollback = (
            f", alarm {entry['alarm']} fired; back on {entry.get('previous_config')}"
            if entry.get("alarm")
            else ""
        )
        lines.append(
            f"deploy    {entry.get('stage')} v{entry.get('model_package_version')} {entry.get('status')} "
            f"on {entry.get('endpoint')} at {entry.get('ended_at') or entry.get('started_at')}{rollback}"
        )
    return "\n".join([lines[0], *(f"  ↳ {line}" for line in lines[1:])])
