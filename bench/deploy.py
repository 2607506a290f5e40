"""Deploy benchmark, locally, with the real image's `serve` on a trained model:

1. the local API's added latency over the bare container: p50/p99 of one-row requests at concurrency 1 and
   16, bare (`POST /invocations` on the container) and through `LocalInferenceApi` (SigV4 verified, routed
   by the endpoint's traffic split); requests are signed before the clock starts (a client's own cost);
2. approval → staging answering: from an approval event to the first 200 through the staging API: start-deploy,
   deploy-model's continuations against the local hosting stand-in (one describe per state, no waiting),
   the model downloaded from (moto's) S3 and its container started, the API's first answer;
3. batch transform throughput on `--transform-rows` rows (SageMaker's split: lines packed into 6 MB requests),
   and its output checked equal to `/invocations` for the same rows.

    python bench/deploy.py --image IMAGE --model path/to/model.tar.gz [--requests 2000] [--transform-rows 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas"), str(ROOT / "container")]

REGION = "us-east-1"
KEY, SECRET = "AKIABENCHCALLER00001", "bench-secret"


def feature_rows() -> list[str]:
    lines = (ROOT / "data/sample/validation/validation.csv").read_text().splitlines()[1:]
    return [line.split(",", 1)[1] for line in lines]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(url: str, bodies: list[tuple[bytes, dict[str, str]]], concurrency: int) -> list[float]:
    """Latencies (ms) of POSTing each body with its headers, `concurrency` keep-alive connections."""
    parts = urlsplit(url)
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [bodies[i::concurrency] for i in range(concurrency)]

    def worker(chunk: list[tuple[bytes, dict[str, str]]]) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine = []
        for body, headers in chunk:
            started = time.perf_counter()
            connection.request("POST", parts.path or "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, response.status
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def signed(url: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "text/csv"})
    SigV4Auth(Credentials(KEY, SECRET), "execute-api", REGION).add_auth(request)
    return body, dict(request.headers)


@contextlib.contextmanager
def api_in_front(endpoint: str, backend: str) -> Iterator[str]:
    from mlpipe.local.api import LocalInferenceApi

    api = LocalInferenceApi(
        endpoint,
        backends=lambda config: backend,
        weights=lambda: {"cfg": 1.0},
        secret_of={KEY: SECRET}.get,
        may_invoke=lambda key: key == KEY,
        region=REGION,
    )
    with api.running() as url:
        yield url


def latency_bench(image: str, model_dir: Path, requests: int) -> dict[str, Any]:
    from mlpipe.local import containers

    rows = feature_rows()
    results: dict[str, Any] = {}
    with containers.serve(image, model_dir) as base, api_in_front("bench", base) as api_url:
        bare_bodies = [
            (f"{rows[i % len(rows)]}\n".encode(), {"Content-Type": "text/csv"}) for i in range(requests)
        ]
        load(f"{base}/invocations", bare_bodies[:200], 4)  # warm-up
        for concurrency in (1, 16):
            api_bodies = [signed(api_url, body) for body, _ in bare_bodies]
            bare = load(f"{base}/invocations", bare_bodies, concurrency)
            through = load(api_url, api_bodies, concurrency)
            results[f"c{concurrency}"] = {
                "bare_p50_ms": round(percentile(bare, 0.5), 2),
                "bare_p99_ms": round(percentile(bare, 0.99), 2),
                "api_p50_ms": round(percentile(through, 0.5), 2),
                "api_p99_ms": round(percentile(through, 0.99), 2),
                "added_p50_ms": round(percentile(through, 0.5) - percentile(bare, 0.5), 2),
                "added_p99_ms": round(percentile(through, 0.99) - percentile(bare, 0.99), 2),
            }
    return results


def transform_bench(image: str, model_dir: Path, rows_wanted: int) -> dict[str, Any]:
    from mlpipe.local import containers
    from mlpipe.local.transform import transform

    rows = feature_rows()
    data = b"".join(f"{rows[i % len(rows)]}\n".encode() for i in range(rows_wanted))
    with containers.serve(image, model_dir) as base:
        started = time.perf_counter()
        result = transform(base, data)
        seconds = time.perf_counter() - started
        sample = b"".join(f"{row}\n".encode() for row in rows)
        parts = urlsplit(base)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        connection.request("POST", "/invocations", body=sample, headers={"Content-Type": "text/csv"})
        direct = connection.getresponse().read()
        equal = transform(base, sample, max_payload_mb=0.002).output == direct
    return {
        "rows": result.rows,
        "requests": result.requests,
        "seconds": round(seconds, 2),
        "rows_per_second": round(result.rows / seconds),
        "output_equals_invocations": equal,
    }


def approval_to_staging(image: str, model_tar: Path, work: Path) -> dict[str, Any]:
    """From the approval event to the first 200 through the staging API, in this process."""
    import boto3
    from deploy_model import deploying
    from moto import mock_aws
    from pipeline_common import aws, endpoints
    from start_deploy import starting

    from mlpipe.local.api import LocalInferenceApi
    from mlpipe.local.codepipeline import LocalCodePipeline
    from mlpipe.local.endpoints import LocalAlarmHistory, LocalAutoscaling, LocalEndpoints, StandInClient
    from mlpipe.local.model_registry import LocalModelRegistry
    from mlpipe.local.serving import LocalServing
    from tests.audit_schema import AUDIT_TABLE_SCHEMA

    group, job = "mlpipe-bench", "mlpipe-bench-job"
    with mock_aws():
        s3, dynamodb, sns = (boto3.client(s, region_name=REGION) for s in ("s3", "dynamodb", "sns"))
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key=f"models/{job}/output/model.tar.gz", Body=model_tar.read_bytes())
        dynamodb.create_table(TableName="audit", **AUDIT_TABLE_SCHEMA)
        dynamodb.put_item(TableName="audit", Item={"job_name": {"S": job}, "status": {"S": "Completed"}})
        topic = sns.create_topic(Name="notifications")["TopicArn"]
        registry = LocalModelRegistry(REGION, on_state_change=lambda event: None)
        registry.call("CreateModelPackageGroup", {"ModelPackageGroupName": group})
        package = registry.call(
            "CreateModelPackage",
            {
                "ModelPackageGroupName": group,
                "ModelPackageDescription": f"training job {job}",
                "CustomerMetadataProperties": {"training-job": job},
                "InferenceSpecification": {
                    "Containers": [
                        {"Image": image, "ModelDataUrl": f"s3://models/models/{job}/output/model.tar.gz"}
                    ],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
            },
        )["ModelPackageArn"]
        local: LocalEndpoints

        def model_of_config(config: str) -> tuple[str, str]:
            model = local.models[local.configs[config]["ProductionVariants"][0]["ModelName"]]
            spec = registry.packages[model["Containers"][0]["ModelPackageName"]]["InferenceSpecification"]
            return image, spec["Containers"][0]["ModelDataUrl"]

        serving = LocalServing(work, model_of_config, s3)
        local = LocalEndpoints(REGION, serving=serving)
        pipeline = LocalCodePipeline("mlpipe-bench-deploy")
        from tests.lambdas.test_deploy import DEPLOY_CONFIG

        os.environ.update(
            {
                "PROJECT_NAME": "mlpipe",
                "ENV_NAME": "bench",
                "PIPELINE_NAME": "mlpipe-bench-deploy",
                "AUDIT_TABLE_NAME": "audit",
                "TOPIC_ARN": topic,
                "MODEL_PACKAGE_GROUP_NAME": group,
                "DEPLOY_CONFIG": json.dumps(DEPLOY_CONFIG),
                "ENDPOINT_ROLE_ARN": "arn:aws:iam::123456789012:role/endpoint",
                "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000",
                "CAPTURE_URI": "s3://models/data-capture/",
            }
        )
        endpoint = endpoints.endpoint_name("mlpipe", "bench", "staging")
        api = LocalInferenceApi(
            endpoint,
            backends=serving.backend,
            weights=lambda: serving.weights(endpoint),
            secret_of={KEY: SECRET}.get,
            may_invoke=lambda key: key == KEY,
            region=REGION,
        )
        clients = {
            "sagemaker": StandInClient("sagemaker", registry, local),
            "codepipeline": StandInClient("codepipeline", pipeline),
            "cloudwatch": StandInClient("cloudwatch", LocalAlarmHistory(local)),
            "application-autoscaling": StandInClient("application-autoscaling", LocalAutoscaling()),
            "s3": s3,
            "dynamodb": dynamodb,
            "sns": sns,
        }
        try:
            with aws.use_clients(clients), api.running() as url:
                started = time.perf_counter()
                registry.call(
                    "UpdateModelPackage", {"ModelPackageArn": package, "ModelApprovalStatus": "Approved"}
                )
                event = {
                    "id": "bench-approval",
                    "detail-type": starting.DETAIL_TYPE,
                    "detail": {
                        "ModelPackageArn": package,
                        "ModelPackageGroupName": group,
                        "ModelApprovalStatus": "Approved",
                    },
                }
                execution = starting.start(
                    starting.parse_event(event),
                    group,
                    "mlpipe-bench-deploy",
                    "models",
                    endpoints.DEPLOY_REQUEST_KEY,
                )["execution_id"]
                parameters = {"stage": "staging", "package_arn": package, "pipeline_execution_id": execution}
                invocations = 0
                while True:
                    invocations += 1
                    job_event = pipeline.new_job(execution, "DeployModel", parameters)["CodePipeline.job"]
                    result = deploying.handle(
                        job_event["id"], parameters, job_event["data"].get("continuationToken")
                    )
                    if result.outcome != "continue":
                        break
                deployed = time.perf_counter()
                body, headers = signed(url, f"{feature_rows()[0]}\n".encode())
                parts = urlsplit(url)
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                connection.request("POST", parts.path, body=body, headers=headers)
                status = connection.getresponse().status
                answered = time.perf_counter()
        finally:
            serving.close()
    return {
        "outcome": result.outcome,
        "deploy_invocations": invocations,
        "first_status": status,
        "approval_to_in_service_s": round(deployed - started, 2),
        "approval_to_answer_s": round(answered - started, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", type=Path, required=True, help="a model.tar.gz the image can serve")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--transform-rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("latency", "transform", "approval"), action="append")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    model_dir = work / "model"
    model_dir.mkdir()
    with tarfile.open(args.model) as tar:
        tar.extractall(model_dir, filter="data")
    model_dir.chmod(0o755)
    report: dict[str, Any] = {"image": args.image, "model": str(args.model), "cores": os.cpu_count()}
    only = set(args.only or ("latency", "transform", "approval"))
    if "latency" in only:
        report["api_latency"] = latency_bench(args.image, model_dir, args.requests)
        print(json.dumps(report["api_latency"]), flush=True)
    if "approval" in only:
        report["approval_to_staging"] = approval_to_staging(args.image, args.model, work)
        print(json.dumps(report["approval_to_staging"]), flush=True)
    if "transform" in only:
        report["transform"] = transform_bench(args.image, model_dir, args.transform_rows)
        print(json.dumps(report["transform"]), flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
