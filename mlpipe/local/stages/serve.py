"""Smoke-serve: the image's `serve` on the trained model, with a few validation rows to /invocations."""

from __future__ import annotations

import io
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlpipe.local import containers
from mlpipe.local.console import StageFailed, note
from mlpipe.local.state import RunState

REQUESTS = 20


def download_model(s3: Any, model_uri: str, model_dir: Path) -> None:
    bucket, _, key = model_uri.removeprefix("s3://").partition("/")
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        tar.extractall(model_dir, filter="data")
    model_dir.chmod(0o755)


def feature_rows(validation_csv: Path, count: int = 5) -> list[str]:
    """Validation rows without the target column (the first column, the container's default)."""
    lines = validation_csv.read_text().splitlines()[1 : count + 1]
    return [line.split(",", 1)[1] for line in lines if "," in line]


def run(state: RunState) -> None:
    validation = sorted((state.options.data / "validation").glob("*.csv"))
    rows = feature_rows(validation[0]) if validation else []
    if not rows:
        raise StageFailed("no validation rows to send")
    model_dir = state.work / "serve" / "model"
    download_model(state.client("s3"), state.need("model_artifact"), model_dir)
    latencies = []
    with containers.serve(state.need("image").tag, model_dir) as base_url:
        request = urllib.request.Request(
            f"{base_url}/invocations",
            data="\n".join(rows).encode(),
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
        )
        for _ in range(REQUESTS):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as response:
                predictions = response.read().decode()
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    for row, prediction in zip(rows, predictions.split(), strict=False):
        note(f"{row[:60]:<60} → {prediction}")
    note(
        f"{len(rows)} rows per request, {REQUESTS} requests: "
        f"p50 {latencies[REQUESTS // 2]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
