"""Batch transform splits the input into requests and its output equals /invocations for the same rows;
LocalServing runs one model server per config that has traffic and stops it when none is routed to it."""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlpipe.local.serving import LocalServing
from mlpipe.local.transform import TransformFailed, mini_batches, transform
from tests.local.test_local_api import Model


def invocations(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
    answer = connection.getresponse().read()
    connection.close()
    return answer


def test_transform_output_equals_invocations_for_the_same_rows() -> None:
    model = Model()
    try:
        rows = b"".join(f"{i},{i * 0.5}\n".encode() for i in range(2000))
        result = transform(model.url, rows, max_payload_mb=0.004, concurrency=4)  # ~4 KB requests
        assert result.rows == 2000 and result.requests > 1
        assert result.output == invocations(model.url, rows)
        assert model.requests == result.requests + 1
    finally:
        model.close()


def test_mini_batches_respect_the_payload_limit_and_keep_order() -> None:
    lines = [f"{i}".encode() * 3 for i in range(100)]
    batches = list(mini_batches(lines, 64))
    assert [line for batch in batches for line in batch] == lines
    assert all(sum(len(line) + 1 for line in batch) <= 64 for batch in batches)
    with pytest.raises(TransformFailed, match="larger than MaxPayloadInMB"):
        list(mini_batches([b"x" * 100], 64))


def test_a_failing_model_fails_the_transform() -> None:
    model = Model(bad=True)
    try:
        with pytest.raises(TransformFailed, match="answered 500"):
            transform(model.url, b"1,2\n-1,2\n")
    finally:
        model.close()


def test_local_serving_starts_a_server_per_config_with_traffic_and_stops_it_after(tmp_path: Path) -> None:
    started: list[str] = []
    stopped: list[str] = []

    @contextlib.contextmanager
    def start(image: str, model_dir: Path) -> Iterator[str]:
        started.append(model_dir.parent.name)
        yield f"http://{model_dir.parent.name}"
        stopped.append(model_dir.parent.name)

    def model_of(config: str) -> tuple[str, str]:
        return "image", f"s3://bucket/{config}/model.tar.gz"

    for config in ("cfg-v1", "cfg-v2"):  # already unpacked: no download
        (tmp_path / "endpoints" / config / "model").mkdir(parents=True)
    serving: Any = LocalServing(tmp_path, model_of, s3=None, start=start)
    serving.route("ep", {"cfg-v1": 1.0})
    serving.route("ep", {"cfg-v1": 0.75, "cfg-v2": 0.25})
    assert started == ["cfg-v1", "cfg-v2"] and serving.backend("cfg-v2") == "http://cfg-v2"
    serving.route("ep", {"cfg-v1": 1.0})  # rolled back: the canary's fleet goes
    assert stopped == ["cfg-v2"] and serving.backend("cfg-v2") is None
    serving.close()
    assert stopped == ["cfg-v2", "cfg-v1"]


def _model_archive() -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    return buffer.getvalue()


def _transform_job(bucket: str, key_arn: str = "") -> dict[str, Any]:
    """What deploy-model sends CreateTransformJob (lambdas/deploy_model/deploying.py), trimmed to what runs."""
    return {
        "TransformJobName": "mlpipe-dev-v1-transform",
        "ModelName": "mlpipe-dev-v1",
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/batch/input/"}
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": f"s3://{bucket}/batch/output/mlpipe-dev-v1-transform/",
            "AssembleWith": "Line",
            "KmsKeyId": key_arn,
        },
    }


def test_a_transform_job_serves_its_model_and_writes_each_input_object_out(
    emulated: Any, tmp_path: Path
) -> None:
    from mlpipe.local.transform import run_job

    s3 = emulated.client("s3")
    bucket = emulated.data_bucket(versioned=False)
    key_arn = emulated.client("kms").create_key()["KeyMetadata"]["Arn"]
    s3.put_object(Bucket=bucket, Key="models/job/output/model.tar.gz", Body=_model_archive())
    inputs = {
        "batch/input/a.csv": b"".join(f"{i},{i * 0.5}\n".encode() for i in range(300)),
        "batch/input/day/b.csv": b"1,2\n3,4\n",
    }
    for key, body in inputs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    served: list[tuple[str, Path]] = []
    model = Model()

    @contextlib.contextmanager
    def start(image: str, model_dir: Path) -> Iterator[str]:
        served.append((image, model_dir))
        yield model.url

    try:
        failure = run_job(
            _transform_job(bucket, key_arn),
            s3,
            lambda name: ("image:tag", f"s3://{bucket}/models/job/output/model.tar.gz"),
            tmp_path,
            start,
        )
        assert failure is None
        assert [image for image, _ in served] == ["image:tag"]
        assert (served[0][1] / "model.json").read_text() == "{}"  # the package's model.tar.gz, unpacked
        for key, body in inputs.items():
            out = key.replace("batch/input/", "batch/output/mlpipe-dev-v1-transform/") + ".out"
            written = s3.get_object(Bucket=bucket, Key=out)
            assert written["Body"].read() == invocations(model.url, body)
            assert written["ServerSideEncryption"] == "aws:kms" and written["SSEKMSKeyId"] == key_arn
    finally:
        model.close()


def test_a_transform_job_fails_with_the_reason_without_input_or_with_a_failing_model(
    emulated: Any, tmp_path: Path
) -> None:
    from mlpipe.local.transform import run_job

    s3 = emulated.client("s3")
    bucket = emulated.data_bucket(versioned=False)
    s3.put_object(Bucket=bucket, Key="models/job/output/model.tar.gz", Body=_model_archive())
    model_of = lambda name: ("image:tag", f"s3://{bucket}/models/job/output/model.tar.gz")  # noqa: E731
    bad = Model(bad=True)

    @contextlib.contextmanager
    def start(image: str, model_dir: Path) -> Iterator[str]:
        yield bad.url

    try:
        assert run_job(_transform_job(bucket), s3, model_of, tmp_path, start) == (
            f"ClientError: no objects under s3://{bucket}/batch/input/"
        )
        s3.put_object(Bucket=bucket, Key="batch/input/a.csv", Body=b"1,2\n-1,2\n")
        failure = run_job(_transform_job(bucket), s3, model_of, tmp_path / "again", start)
        assert failure is not None and "answered 500" in failure
    finally:
        bad.close()
