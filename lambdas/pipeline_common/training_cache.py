"""No retraining on identical inputs: a training run's cache key, and the earlier run it may reuse.

The key is a SHA-256 over the inputs that decide the model, in a canonical JSON form:

- the image digest (the exact image; a tag could move);
- the data's *content*: each object's key below the data prefix and its content id (the checksum S3 keeps
  for it, see `data_version`), so re-uploading identical files is not new data, while the audit record
  still keeps the exact version ids;
- the hyperparameters;
- the training configuration that changes what is trained: instance type and count, and the tuning job
  (objective, strategy, ranges, limits).

A run is reused when the audit table holds a Completed record with the same key that is not itself a cache
hit, and its model artifact still exists. The lookup is one Query on the `by-cache-key` index.

The decision is made once per pipeline execution and written into the execution's data manifest with the
data version (`data_version.pin`, write-once), so every retry of the action follows the same decision even
if a matching run completes meanwhile: an execution either reuses a run or starts one job, never both.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline_common import audit, aws
from pipeline_common.data_version import DataVersion
from pipeline_common.settings import TrainingConfig

CACHE_INDEX = "by-cache-key"
KEY_VERSION = 1  # bump when the key's inputs change, so older keys stop matching
RETRAIN_VALUES = frozenset({"true", "yes", "1"})

logger = logging.getLogger(__name__)


def key_inputs(image_digest: str, data: DataVersion, config: TrainingConfig) -> dict[str, Any] | None:
    """What the key covers; None when an input is unknown (no image digest, or data without content ids),
    which disables reuse for the run rather than risking a wrong match."""
    contents = data.contents
    if not image_digest or contents is None:
        return None
    return {
        "version": KEY_VERSION,
        "image_digest": image_digest,
        "data": contents,
        "hyperparameters": dict(config.hyperparameters),
        "instance_type": config.instance_type,
        "instance_count": config.instance_count,
        "tuning": config.tuning.as_record() if config.tuning else None,
        # Only when not the default, so the keys of earlier runs stay valid: each host's share of the data
        # (and so the merged sketches and the model) depends on it.
        **(
            {"data_distribution": config.data_distribution}
            if config.data_distribution != "FullyReplicated"
            else {}
        ),
    }


def cache_key(image_digest: str, data: DataVersion, config: TrainingConfig) -> str | None:
    inputs = key_inputs(image_digest, data, config)
    if inputs is None:
        return None
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What an execution does, decided once: reuse `reuse` (an earlier run's record), or train."""

    cache_key: str | None
    reuse: Mapping[str, Any] | None
    reason: str  # why it trains or reuses, for logs and the action's summary

    def as_document(self) -> dict[str, Any]:
        reuse = None
        if self.reuse is not None:
            reuse = {k: self.reuse.get(k) for k in REUSED_FIELDS if self.reuse.get(k) is not None}
        return {"cache_key": self.cache_key, "reuse": reuse, "reason": self.reason}

    @classmethod
    def from_document(cls, document: Mapping[str, Any] | None) -> Plan:
        """A manifest without a plan (written before the cache existed) trains."""
        if not document:
            return cls(None, None, "no cache decision recorded")
        return cls(document.get("cache_key"), document.get("reuse"), str(document.get("reason", "")))


# What a cache-hit record and the action's outputs take over from the reused run's record.
REUSED_FIELDS = (
    "job_name",
    "kind",
    "model_artifact",
    "metrics",
    "model_meta",
    "best_training_job",
    "objective_metric",
    "objective_value",
    "ended_at",
)


def decide(table: str, key: str | None, cache_enabled: bool, retrain: bool, artifact_exists: Any) -> Plan:
    """Reuse a Completed run with the same key unless reuse is off (config) or a fresh run was asked for
    (the RETRAIN pipeline variable). `artifact_exists(uri) -> bool` checks the reused model is still there."""
    if key is None:
        return Plan(None, None, "no cache key (image digest or data checksums unknown)")
    if not cache_enabled:
        return Plan(key, None, "training_cache is off")
    if retrain:
        return Plan(key, None, "RETRAIN=true asked for a fresh run")
    for record in completed_runs(table, key):
        artifact = str(record.get("model_artifact") or "")
        if artifact_exists(artifact):
            return Plan(key, record, f"same inputs as {record['job_name']}, which completed")
        logger.warning("run %s matches but its model %s is gone; not reused", record["job_name"], artifact)
    return Plan(key, None, "no completed run with the same inputs")


def completed_runs(table: str, key: str) -> list[dict[str, Any]]:
    """Completed runs with this key that trained (not cache hits themselves), newest first."""
    dynamodb = aws.client("dynamodb")
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": CACHE_INDEX,
        "KeyConditionExpression": "#k = :k",
        "ExpressionAttributeNames": {"#k": "cache_key"},
        "ExpressionAttributeValues": {":k": {"S": key}},
        "ScanIndexForward": False,
    }
    found: list[dict[str, Any]] = []
    while True:
        response = dynamodb.query(**request)
        for item in response.get("Items", []):
            record = audit.from_item(item)
            if (
                record.get("status") == "Completed"
                and record.get("model_artifact")
                and not record.get("cache_hit_of")
            ):
                found.append(record)
        if "LastEvaluatedKey" not in response:
            return found
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def wants_retrain(value: str) -> bool:
    return value.strip().lower() in RETRAIN_VALUES
