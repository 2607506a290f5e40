"""Data: the training data uploaded to the emulated data bucket, under the configured prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlpipe.local.console import StageFailed, note
from mlpipe.local.state import RunState
from stacks.functions import START_TRAINING

CHANNELS = ("train", "validation")


def upload_data(s3: Any, data_dir: Path, bucket: str, prefix: str) -> dict[str, str]:
    """Every file under data_dir/<channel>/ to s3://bucket/<prefix><channel>/...; key -> version id."""
    uploaded: dict[str, str] = {}
    for channel in CHANNELS:
        channel_dir = data_dir / channel
        if not channel_dir.is_dir():
            continue
        for path in sorted(p for p in channel_dir.rglob("*") if p.is_file()):
            key = f"{prefix}{channel}/{path.relative_to(channel_dir).as_posix()}"
            response = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            uploaded[key] = response.get("VersionId", "null")
    if not any(key.startswith(f"{prefix}train/") for key in uploaded):
        raise StageFailed(f"no files under {data_dir / 'train'}")
    return uploaded


def run(state: RunState) -> None:
    environment = state.need("deployment").function(START_TRAINING.handler).environment
    bucket, prefix = environment["DATA_BUCKET"], environment["DATA_PREFIX"]
    state.data_versions = upload_data(state.client("s3"), state.options.data, bucket, prefix)
    note(f"{len(state.data_versions)} objects to s3://{bucket}/{prefix}")
    for key, version in state.data_versions.items():
        note(f"  {key}  version {version}")
