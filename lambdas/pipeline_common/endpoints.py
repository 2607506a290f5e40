"""The deploy half's names and shapes, the one place the stacks, the handlers and the local run read them.

Every name is a function of the project, the environment, the stage and the package version, so a retried
step finds what an earlier attempt created instead of creating a second one (SageMaker refuses a duplicate
name with a ValidationException "Cannot create already existing ...").
"""

from __future__ import annotations

import hashlib
import re

VARIANT = "AllTraffic"  # one production variant; a blue/green update must keep its name
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"  # Application Auto Scaling's dimension
STAGING = "staging"
PRODUCTION = "production"
STAGES = (STAGING, PRODUCTION)

# The REST API in front of each endpoint (stacks/constructs/inference_api.py; mlpipe/local/api.py).
API_STAGE = "v1"
API_PATH = "invocations"
# API Gateway's integration responses: SageMaker's status (regex, matched in order) -> the API's status.
# 424 is a model error (the container answered with an error), 429 throttling; any other 4xx is the
# caller's request (400), and any 5xx the endpoint's failure, reported as a bad gateway (502).
ERROR_MAP: tuple[tuple[str, int], ...] = (
    ("413", 413),
    ("424", 424),
    ("429", 429),
    (r"4\d{2}", 400),
    (r"5\d{2}", 502),
)
# SageMaker's payload limits (InvokeEndpoint): 6 MB real-time, 4 MB serverless.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_SERVERLESS_PAYLOAD_BYTES = 4 * 1024 * 1024

DEPLOY_REQUEST_KEY = "deploy-requests/request.json"  # the deploy pipeline's S3 source object
# The golden set: a member of the training job's output.tar.gz (sagemaker_contract.golden.GOLDEN_FILE).
GOLDEN_NAME = "golden.json"


def endpoint_name(project: str, env: str, stage: str) -> str:
    return f"{project}-{env}-{stage}"


def model_name(project: str, env: str, version: int) -> str:
    """One SageMaker model per package version, shared by the stages."""
    return f"{project}-{env}-v{version}"


def endpoint_config_name(endpoint: str, version: int) -> str:
    return f"{endpoint}-v{version}"


_CONFIG = re.compile(r"^(?P<endpoint>.+)-v(?P<version>\d+)$")


def version_of_config(config_name: str) -> int | None:
    match = _CONFIG.match(config_name or "")
    return int(match["version"]) if match else None


def alarm_names(endpoint: str) -> tuple[str, str]:
    """The production endpoint's auto-rollback alarms: 5xx errors and p99 model latency."""
    return f"{endpoint}-invocation-5xx", f"{endpoint}-model-latency-p99"


def transform_job_name(project: str, env: str, version: int, token: str) -> str:
    """At most 63 characters; `token` (the pipeline execution) makes one job per production deploy."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"{project}-{env}-transform-v{version}-{digest}"[:63]
