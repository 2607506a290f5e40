"""The exact version of the training data a job read: S3 version ids plus a short content manifest hash.

Works with versioned buckets (real version ids) and unversioned ones (version id "null"; the ETag still
pins the content in the manifest hash).

Each object also gets a *content id*, what its bytes are regardless of when or how often they were
uploaded: the checksum S3 keeps for it (HeadObject with ChecksumMode ENABLED; ListObjectVersions names the
algorithm but never returns the value). S3 computes one on every upload since December 2024 (CRC64NVME
unless the uploader asked for another, e.g. SHA256); an older object without one falls back to its ETag.
The ETag of an SSE-KMS object is not an MD5 of its bytes and differs between uploads of the same bytes, so
the fallback can only make identical data look new (a needless retrain), never different data look the same.
The training cache (`training_cache`) keys on content ids; the record keeps the exact version ids.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline_common import aws
from pipeline_common.errors import BadInputError

# The data channels a job may get: train (required), validation and test (each when objects exist under
# `<prefix><channel>/`). The container's final metrics come from test when it is there.
CHANNELS = ("train", "validation", "test")
HASH_LENGTH = 12
# The checksum a content id is taken from when S3 holds more than one kind: the strongest first. A composite
# (multipart) checksum carries its part count ("...-3"), so it only ever matches the same upload layout.
CHECKSUM_PREFERENCE = ("SHA256", "CRC64NVME", "SHA512", "SHA1", "CRC32C", "CRC32", "MD5")
# HeadObject calls in flight at once (botocore's connection pool holds 10).
HEAD_CONCURRENCY = 8
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "403"})

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataObject:
    key: str
    version_id: str
    etag: str
    size: int
    content_id: str = ""  # "<ALGORITHM>:<checksum>" or "etag:<etag>"; "" when not read (an old manifest)


def content_id(head: Mapping[str, Any]) -> str:
    """What an object's bytes are, from a HeadObject response (see the module docstring)."""
    for algorithm in CHECKSUM_PREFERENCE:
        value = head.get(f"Checksum{algorithm}")
        if value:
            return f"{algorithm}:{value}"
    return f"etag:{str(head.get('ETag', '')).strip(chr(34))}"


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

    @property
    def contents(self) -> dict[str, str] | None:
        """Key below the prefix (train/a.csv) -> content id; None if any object's content is unknown."""
        if any(not obj.content_id for obj in self.objects):
            return None
        return {obj.key.removeprefix(self.prefix): obj.content_id for obj in self.objects}


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
    """List `<prefix><channel>/` for each of CHANNELS and pin every current object's version.

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
    return DataVersion(bucket=bucket, prefix=prefix, objects=tuple(with_content_ids(s3, bucket, objects)))


def _head(s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any]:
    extra = {"VersionId": version_id} if version_id and version_id != "null" else {}
    return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **extra)


def with_content_ids(s3: Any, bucket: str, objects: list[DataObject]) -> list[DataObject]:
    """Each object with the content id of exactly its listed version (one HeadObject each, a few at a time)."""
    missing = [obj for obj in objects if not obj.content_id]
    if not missing:
        return objects

    def read(obj: DataObject) -> DataObject:
        return replace(obj, content_id=content_id(_head(s3, bucket, obj.key, obj.version_id)))

    if len(missing) <= HEAD_CONCURRENCY:
        found = {
            obj.key: read(obj) for obj in missing
        }  # a few: in order (seeded fault trials replay exactly)
    else:
        with ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY) as pool:
            found = {obj.key: obj for obj in pool.map(read, missing)}
    return [found.get(obj.key, obj) for obj in objects]


def _objects_by_head(s3: Any, bucket: str, prefix: str) -> list[DataObject]:
    objects = []
    for channel in CHANNELS:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}{channel}/"):
            for item in page.get("Contents", []):
                if is_folder_marker(item["Key"], int(item.get("Size", 0))):
                    continue
                head = _head(s3, bucket, item["Key"])
                objects.append(
                    DataObject(
                        key=item["Key"],
                        version_id=str(head.get("VersionId") or "null"),
                        etag=str(head.get("ETag", "")).strip('"'),
                        size=int(head.get("ContentLength", item.get("Size", 0))),
                        content_id=content_id(head),
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
            {
                "key": o.key,
                "version_id": o.version_id,
                "etag": o.etag,
                "size": o.size,
                "content_id": o.content_id,
            }
            for o in version.objects
        ],
    }


def from_manifest_document(document: dict[str, Any]) -> DataVersion:
    objects = tuple(
        DataObject(
            key=o["key"],
            version_id=o["version_id"],
            etag=o["etag"],
            size=int(o["size"]),
            content_id=str(o.get("content_id", "")),  # absent in manifests written before content ids
        )
        for o in document.get("objects", [])
    )
    return DataVersion(bucket=document["bucket"], prefix=document["prefix"], objects=objects)


@dataclass(frozen=True)
class Pinned:
    """An execution's data version, and the decisions recorded with it (see `pin`)."""

    version: DataVersion
    plan: dict[str, Any] = field(default_factory=dict)


def pin(
    data_bucket: str,
    data_prefix: str,
    manifest_bucket: str,
    manifest_key: str,
    plan: Callable[[DataVersion], Mapping[str, Any]] | None = None,
) -> Pinned:
    """The data version of one pipeline execution, fixed the first time it is asked for.

    A retried invocation must train on, and record, what the first one saw, even if objects changed in
    between: the first call lists the data and writes the manifest (only if none exists: `If-None-Match`);
    every later call reads that manifest back. Idempotent under retries and concurrent calls. Data without
    a train channel is refused before anything is written, so uploading it and retrying the action works.

    `plan(version)`, called only by the call that writes the manifest, returns decisions that must be made
    once per execution with this data version (the training cache's reuse decision); they are stored in
    the manifest and every later call gets the same ones back.
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
    decided = dict(plan(version)) if plan is not None else {}
    document = {**manifest_document(version), "plan": decided}
    body = json.dumps(document, separators=(",", ":")).encode()
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
    return Pinned(version, decided)


def _read_manifest(s3: Any, bucket: str, key: str) -> Pinned | None:
    import json

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if aws.error_code(error) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    document = json.loads(body)
    return Pinned(from_manifest_document(document), dict(document.get("plan") or {}))
