"""Which package serves each endpoint now, and its lineage, from the audit trail alone.

Every deployment is a `deployment:<stage>:v<N>` entry on the audit record of the training job whose
package it deployed (`pipeline_common.deployments`), so the records of the completed runs hold every
endpoint's history. Per endpoint name:

- current: the package whose deployment to it is the newest (by its start) of those that ended InService.
  A rolled back or failed deployment never is: traffic stayed on, or went back to, an earlier package.
- last attempt: the newest rolled back or failed deployment, when it is newer than the current one.
- deploying: the newest deployment not finished yet (Deploying), when it is newer than both.

Used by `mlpipe-runs endpoints`; the records come from the `by-status` index, never a Scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline_common import deployments
from pipeline_common.endpoints import STAGES

from mlpipe.cli.lineage import lineage

UNFINISHED = frozenset({deployments.STARTED})
UNSUCCESSFUL = frozenset({deployments.FAILED, deployments.ROLLED_BACK})
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Deployment:
    """One `deployment:*` entry and the record it is on."""

    entry: Mapping[str, Any]
    record: Mapping[str, Any]

    @property
    def status(self) -> str:
        return str(self.entry.get("status") or "")

    @property
    def started(self) -> datetime:
        return moment(self.entry.get("started_at") or self.entry.get("ended_at"))

    def summary(self) -> dict[str, Any]:
        """The entry as recorded (less its internal rank), with the run it deployed."""
        return {
            **{k: v for k, v in self.entry.items() if k != "rank"},
            "training_job": self.record.get("job_name"),
            "commit_id": self.record.get("commit_id"),
        }


def moment(stamp: Any) -> datetime:
    """An entry's ISO-8601 time, comparable whatever its offset; the earliest time when it has none."""
    try:
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else _EARLIEST
    except ValueError:
        return _EARLIEST
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def deployments_of(record: Mapping[str, Any]) -> list[Deployment]:
    """The record's deployment entries (stage and version as the entry has them, else from its key)."""
    found = []
    for key, entry in record.items():
        if not key.startswith(deployments.ATTRIBUTE_PREFIX) or not isinstance(entry, Mapping):
            continue
        stage, _, version = key[len(deployments.ATTRIBUTE_PREFIX) :].rpartition(":v")
        found.append(
            Deployment(
                {
                    "stage": stage,
                    "model_package_version": int(version) if version.isdigit() else version,
                    **entry,
                },
                record,
            )
        )
    return found


def _newest(candidates: Iterable[Deployment], after: Deployment | None = None) -> Deployment | None:
    floor = after.started if after else None
    newest = None
    for deployment in candidates:
        if floor is not None and deployment.started <= floor:
            continue
        if newest is None or deployment.started > newest.started:
            newest = deployment
    return newest


def _later(*candidates: Deployment | None) -> Deployment | None:
    present = [d for d in candidates if d is not None]
    return max(present, key=lambda d: d.started) if present else None


def endpoint_views(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One view per endpoint the records' deployments went to, staging before production: its current
    package (with the full lineage of that package's record), the last unsuccessful attempt and a
    deployment under way when newer than it; each None when there is none."""
    by_endpoint: dict[tuple[str, str], list[Deployment]] = {}
    for record in records:
        for deployment in deployments_of(record):
            endpoint = str(deployment.entry.get("endpoint") or "?")
            by_endpoint.setdefault((endpoint, str(deployment.entry["stage"])), []).append(deployment)
    views = []
    for (endpoint, stage), history in by_endpoint.items():
        current = _newest(d for d in history if d.status == deployments.IN_SERVICE)
        attempt = _newest((d for d in history if d.status in UNSUCCESSFUL), after=current)
        deploying = _newest((d for d in history if d.status in UNFINISHED), after=_later(current, attempt))
        views.append(
            {
                "endpoint": endpoint,
                "stage": stage,
                "current": current.summary() if current else None,
                "last_attempt": attempt.summary() if attempt else None,
                "deploying": deploying.summary() if deploying else None,
                "lineage": lineage(current.record) if current else None,
            }
        )
    order = {stage: index for index, stage in enumerate(STAGES)}
    return sorted(views, key=lambda view: (order.get(view["stage"], len(order)), view["endpoint"]))
