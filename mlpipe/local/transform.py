"""A batch transform job as SageMaker runs one on the image's `serve`: the input split into requests.

`SplitType=Line` with `BatchStrategy=MultiRecord`: consecutive lines are packed into requests of at most
`max_payload_mb` (SageMaker's MaxPayloadInMB, default 6), each POSTed to `/invocations`, and the answers
joined in input order (`AssembleWith=Line`), so the output is line for line what `/invocations` answers
for the same rows. Up to `concurrency` requests are in flight (SageMaker's MaxConcurrentTransforms).
"""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MAX_PAYLOAD_MB = 6


class TransformFailed(Exception):
    pass


@dataclass(frozen=True)
class TransformResult:
    rows: int
    requests: int
    output: bytes


def mini_batches(lines: list[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) + 1 > max_bytes:
            raise TransformFailed(f"a record of {len(line)} bytes is larger than MaxPayloadInMB")
        if batch and size + len(line) + 1 > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def _post(base_url: str, body: bytes, content_type: str) -> bytes:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    try:
        connection.request(
            "POST", "/invocations", body=body, headers={"Content-Type": content_type, "Accept": "text/csv"}
        )
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise TransformFailed(
            f"/invocations answered {response.status}: {answer[:300].decode(errors='replace')}"
        )
    return answer


def transform(
    base_url: str,
    data: bytes,
    *,
    content_type: str = "text/csv",
    max_payload_mb: float = DEFAULT_MAX_PAYLOAD_MB,
    concurrency: int = 1,
) -> TransformResult:
    lines = [line for line in data.splitlines() if line.strip()]
    batches = list(mini_batches(lines, int(max_payload_mb * 1024 * 1024)))
    bodies = [b"\n".join(batch) + b"\n" for batch in batches]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        answers = list(pool.map(lambda body: _post(base_url, body, content_type), bodies))
    output = b"".join(answer if answer.endswith(b"\n") else answer + b"\n" for answer in answers)
    predicted = len([line for line in output.splitlines() if line.strip()])
    if predicted != len(lines):
        raise TransformFailed(f"{len(lines)} rows in, {predicted} predictions out")
    return TransformResult(len(lines), len(bodies), output)


def run_job(
    job: dict[str, Any],
    s3: Any,
    image_and_model: Callable[[str], tuple[str, str]],
    work: Path,
    start: Callable[[str, Path], contextlib.AbstractContextManager[str]],
) -> str | None:
    """A CreateTransformJob request run as SageMaker runs it: the model's image serves its model.tar.gz, each
    object under the input prefix is split into requests, and its answers go to `<output path><key>.out`
    (SageMaker's naming, relative to the input prefix), KMS-encrypted with the job's key. None, or why it
    failed (the job's FailureReason)."""
    from mlpipe.local.stages.serve import download_model

    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    input_bucket, _, prefix = source.removeprefix("s3://").partition("/")
    output = job["TransformOutput"]
    output_bucket, _, output_prefix = output["S3OutputPath"].removeprefix("s3://").partition("/")
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=input_bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if not item["Key"].endswith("/")
    ]
    if not keys:
        return f"ClientError: no objects under {source}"
    image, model_uri = image_and_model(job["ModelName"])
    model_dir = work / "transform" / job["TransformJobName"] / "model"
    download_model(s3, model_uri, model_dir)
    encryption = (
        {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": output["KmsKeyId"]}
        if output.get("KmsKeyId")
        else {}
    )
    try:
        with start(image, model_dir) as url:
            for key in keys:
                data = s3.get_object(Bucket=input_bucket, Key=key)["Body"].read()
                result = transform(
                    url,
                    data,
                    content_type=job["TransformInput"].get("ContentType", "text/csv"),
                    max_payload_mb=job.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB),
                    concurrency=job.get("MaxConcurrentTransforms", 1),
                )
                name = f"{output_prefix}{key.removeprefix(prefix)}.out"
                s3.put_object(Bucket=output_bucket, Key=name, Body=result.output, **encryption)
    except TransformFailed as error:
        return f"ClientError: {error}"
    return None
