"""Where a stand-in's state outlives the process: one JSON object in a bucket of the emulator.

A local run against a reused emulator (`--endpoint-url`) is a later session of the same account: what
SageMaker would still know (the registry's packages, ended training jobs) must be there for it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError


class StateStore(Protocol):
    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


def json_default(value: Any) -> Any:
    """`json.dumps`'s `default`: datetimes as epoch seconds, the JSON protocols' timestamp format."""
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def json_safe(value: Any) -> Any:
    """`value` as the JSON protocols send it (datetimes as epoch seconds), for keeping past the process."""
    return json.loads(json.dumps(value, default=json_default))


@dataclass
class S3JsonStore:
    """A stand-in's state as one JSON object (`key`) in `bucket`, created on first use."""

    s3: Any
    bucket: str
    key: str

    def load(self) -> dict[str, Any] | None:
        try:
            self.s3.create_bucket(Bucket=self.bucket)
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())  # type: ignore[no-any-return]
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def save(self, state: dict[str, Any]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(state, default=str).encode())
