"""The exact version of the training data a job read: S3 version ids plus a short content manifest hash.

Works with versioned buckets (real version ids) and unversioned ones (version id "null"; the ETag still
pins the content in the manifest hash).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline_common import aws
from pipeline_common.errors import BadInputError

CHANNELS = ("train", "validation")
HASH_LENGTH = 12
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "403"})

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataObject:
    key: str
    version_id: str
    etag: str
    size: int


@dataclass(frozen=True)
class DataVersion:
    bucket: str
    prefix: str
    objects: tuple[DataObject, ...] = field(default_factory=tuple)

    @property
    def version_ids(self) -> dict[str, str]:
        """key → S3 version id ("null" in an unversioned bucket)."""
        return {obj.key: obj.version_id for obj in self.objects}

    @property
    def manifest_hash(self) -> str:
        return manifest_hash(self.objects)

    def channel_objects(self, channel: str) -> list[DataObject]:
        channel_prefix = f"{self.prefix}{channel}/"
        return [obj for obj in self.objects if obj.key.startswith(channel_prefix)]

    def has_channel(self, channel: str) -> bool:
        return bool(self.channel_objects(channel))


def manifest_hash(objects: Iterable[DataObject]) -> str:
    """sha256 over sorted `key@version@etag` lines, first 12 hex digits: same data, same hash."""
    lines = sorted(f"{obj.key}@{obj.version_id}@{obj.etag}" for obj in objects)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:HASH_LENGTH]


def is_folder_marker(key: str, size: int) -> bool:
    """The zero-byte "folder" objects the console creates (and any other empty object)."""
    return key.endswith("/") or size == 0


def current_objects(pages: Iterable[dict[str, Any]]) -> list[DataObject]:
    """The latest, non-deleted version of every object in ListObjectVersions pages."""
    pages = list(pages)
    deleted = set()
    for page in pages:
        for marker in page.get("DeleteMarkers", []):
            if marker.get("IsLatest"):
                deleted.add(marker["Key"])
    objects = []
    for page in pages:
        for version in page.get("Versions", []):
            if not version.get("IsLatest", True) or version["Key"] in deleted:
                continue
            size = int(version.get("Size", 0))
            if is_folder_marker(version["Key"], size):
                continue
            objects.append(
                DataObject(
                    key=version["Key"],
                    version_id=str(version.get("VersionId") or "null"),
                    etag=str(version.get("ETag", "")).strip('"'),
                    size=size,
                )
            )
    return sorted(objects, key=lambda obj: obj.key)


def resolve(bucket: str, prefix: str) -> DataVersion:
    """List `<prefix>train/` and `<prefix>validation/` and pin every current object's version.

    ListObjectVersions needs s3:ListBucketVersions. Without it, fall back to ListObjectsV2 plus one
    HeadObject per object (s3:ListBucket + s3:GetObject), which also returns each current version id.
    """
    s3 = aws.client("s3")
    try:
        pages: list[dict[str, Any]] = []
        for channel in CHANNELS:
            paginator = s3.get_paginator("list_object_versions")
            pages.extend(paginator.paginate(Bucket=bucket, Prefix=f"{prefix}{channel}/"))
        objects = current_objects(pages)
    except Exception as error:
        if aws.error_code(error) not in ACCESS_DENIED:
            raise
        logger.warning(
            "ListObjectVersions denied on s3://%s/%s (grant s3:ListBucketVersions); using HeadObject per object",
            bucket,
            prefix,
        )
        objects = _objects_by_head(s3, bucket, prefix)
    return DataVersion(bucket=bucket, prefix=prefix, objects=tuple(objects))


def _objects_by_head(s3: Any, bucket: str, prefix: str) -> list[DataObject]:
    objects = []
    for channel in CHANNELS:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}{channel}/"):
            for item in page.get("Contents", []):
                if is_folder_marker(item["Key"], int(item.get("Size", 0))):
                    continue
                head = s3.head_object(Bucket=bucket, Key=item["Key"])
                objects.append(
                    DataObject(
                        key=item["Key"],
                        version_id=str(head.get("VersionId") or "null"),
                        etag=str(head.get("ETag", "")).strip('"'),
                        size=int(head.get("ContentLength", item.get("Size", 0))),
                    )
                )
    return sorted(objects, key=lambda obj: obj.key)


# -- the manifest: one execution's data version, written once next to its model ---------------------------
MANIFEST_NAME = "data-manifest.json"
# The audit record repeats the key -> version id map only up to this many objects: a DynamoDB item is at most
# 400 KB, and the manifest in S3 is the complete list at any size.
INLINE_VERSION_LIMIT = 100


def manifest_document(version: DataVersion) -> dict[str, Any]:
    return {
        "bucket": version.bucket,
        "prefix": version.prefix,
        "hash": version.manifest_hash,
        "objects": [
            {"key": o.key, "version_id": o.version_id, "etag": o.etag, "size": o.size}
            for o in version.objects
        ],
    }


def from_manifest_document(document: dict[str, Any]) -> DataVersion:
    objects = tuple(
        DataObject(key=o["key"], version_id=o["version_id"], etag=o["etag"], size=int(o["size"]))
        for o in document.get("objects", [])
    )
    return DataVersion(bucket=document["bucket"], prefix=document["prefix"], objects=objects)


def pin(data_bucket: str, data_prefix: str, manifest_bucket: str, manifest_key: str) -> DataVersion:
    """The data version of one pipeline execution, fixed the first time it is asked for.

    A retried invocation must train on, and record, what the first one saw, even if objects changed in
    between: the first call lists the data and writes the manifest (only if none exists: `If-None-Match`);
    every later call reads that manifest back. Idempotent under retries and concurrent calls. Data without
    a train channel is refused before anything is written, so uploading it and retrying the action works.
    """
    import json

    s3 = aws.client("s3")
    existing = _read_manifest(s3, manifest_bucket, manifest_key)
    if existing is not None:
        return existing
    version = resolve(data_bucket, data_prefix)
    if not version.has_channel("train"):
        raise BadInputError(
            f"no training data: s3://{data_bucket}/{data_prefix}train/ has no objects "
            "(zero-byte folder markers do not count)"
        )
    body = json.dumps(manifest_document(version), separators=(",", ":")).encode()
    try:
        s3.put_object(
            Bucket=manifest_bucket,
            Key=manifest_key,
            Body=body,
            ContentType="application/json",
            IfNoneMatch="*",
        )
    except Exception as error:
        if aws.error_code(error) not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
        # Another invocation (or this one's applied-but-lost write) got there first: that one is the version.
        existing = _read_manifest(s3, manifest_bucket, manifest_key)
        if existing is None:
            raise
        return existing
    return version


def _read_manifest(s3: Any, bucket: str, key: str) -> DataVersion | None:
    import json

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if aws.error_code(error) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return from_manifest_document(json.loads(body))
