"""Data: the training data uploaded to the emulated data bucket, under the configured prefix.

Each file is uploaded with a SHA-256 checksum (`ChecksumAlgorithm`), which S3 keeps with the object and
HeadObject returns (`ChecksumMode`). A file whose bytes are already the current object's is not uploaded
again: it keeps its version, so a second run against the same emulator (`--endpoint-url`) with the same
data sees the same data and the training cache can reuse the first run.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_common.data_version import CHANNELS

from mlpipe.local.console import StageFailed, note
from mlpipe.local.state import RunState
from stacks.functions import START_TRAINING


@dataclass(frozen=True)
class Uploaded:
    key: str
    version_id: str
    kept: bool  # True: identical to the current object, not uploaded again


def sha256_base64(body: bytes) -> str:
    """What S3 returns as ChecksumSHA256 for a single-part upload."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def current_checksum(s3: Any, bucket: str, key: str) -> tuple[str | None, str]:
    """(ChecksumSHA256 of the current object or None, its version id); (None, '') if there is none."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None, ""
        raise
    return head.get("ChecksumSHA256"), str(head.get("VersionId") or "null")


def upload_file(s3: Any, bucket: str, key: str, body: bytes) -> Uploaded:
    checksum = sha256_base64(body)
    current, version = current_checksum(s3, bucket, key)
    if current == checksum:
        return Uploaded(key, version, kept=True)
    response = s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    return Uploaded(key, str(response.get("VersionId") or "null"), kept=False)


def upload_data(s3: Any, data_dir: Path, bucket: str, prefix: str) -> list[Uploaded]:
    """Every file under data_dir/<channel>/ to s3://bucket/<prefix><channel>/..., unless already there."""
    uploaded: list[Uploaded] = []
    for channel in CHANNELS:
        channel_dir = data_dir / channel
        if not channel_dir.is_dir():
            continue
        for path in sorted(p for p in channel_dir.rglob("*") if p.is_file()):
            key = f"{prefix}{channel}/{path.relative_to(channel_dir).as_posix()}"
            uploaded.append(upload_file(s3, bucket, key, path.read_bytes()))
    if not any(item.key.startswith(f"{prefix}train/") for item in uploaded):
        raise StageFailed(f"no files under {data_dir / 'train'}")
    return uploaded


def run(state: RunState) -> None:
    environment = state.need("deployment").function(START_TRAINING.handler).environment
    bucket, prefix = environment["DATA_BUCKET"], environment["DATA_PREFIX"]
    uploaded = upload_data(state.client("s3"), state.options.data, bucket, prefix)
    state.data_versions = {item.key: item.version_id for item in uploaded}
    kept = sum(item.kept for item in uploaded)
    note(
        f"{len(uploaded)} objects in s3://{bucket}/{prefix}: {len(uploaded) - kept} uploaded, {kept} unchanged "
        "(same SHA-256 as the current object: not uploaded again, version kept)"
    )
    for item in uploaded:
        note(f"  {item.key}  version {item.version_id}" + ("  (unchanged, kept)" if item.kept else ""))
