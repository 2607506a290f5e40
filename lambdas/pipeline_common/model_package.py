"""The model registry as this pipeline uses it: one group per project and environment, one package per
training job, found again by the job's name; the evaluation document next to the model; who decided.

Shared by evaluate-model (the approved package to compare with), register-model (the package) and
record-approval (the decisions), and by `mlpipe-runs` (approve, reject, lineage).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pipeline_common.errors import ConfigurationError

APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED)
DECISIONS = (APPROVED, REJECTED)

# CustomerMetadataProperties keys: where the package came from (README: model package metadata).
META_COMMIT = "commit"
META_REPO = "repo"
META_BRANCH = "branch"
META_DATA_MANIFEST = "data-manifest"
META_DATA_VERSION = "data-version"
META_IMAGE_DIGEST = "image-digest"
META_TRAINING_JOB = "training-job"
META_EXECUTION = "pipeline-execution"
MAX_METADATA_VALUE = 256  # SageMaker's limit per CustomerMetadataProperties value

EVALUATION_NAME = "evaluation.json"  # next to the model: <model prefix><job>/evaluation.json
EVALUATION_CONTENT_TYPE = "application/json"
DESCRIPTION_PREFIX = "training job "
_DESCRIPTION_JOB = re.compile(r"^training job (?P<job>[a-zA-Z0-9-]+)\b")
_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/(?P<group>[^/]+)/(?P<version>\d+)$"
)


@dataclass(frozen=True)
class PackageSpec:
    """REGISTRY_CONFIG: what every package declares beyond its model (set by the stacks at synth)."""

    auto_approve: bool
    inference_instance_types: tuple[str, ...]
    content_types: tuple[str, ...]  # what the image's `serve` accepts (container/sagemaker_contract)
    response_types: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PackageSpec:
        try:
            raw = json.loads(text)
            spec = cls(
                auto_approve=bool(raw["auto_approve"]),
                inference_instance_types=tuple(str(t) for t in raw["inference_instance_types"]),
                content_types=tuple(str(t) for t in raw["content_types"]),
                response_types=tuple(str(t) for t in raw["response_types"]),
            )
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigurationError(
                "REGISTRY_CONFIG must be JSON with auto_approve, inference_instance_types, content_types and "
                f"response_types: {error}"
            ) from None
        if not spec.inference_instance_types or not spec.content_types or not spec.response_types:
            raise ConfigurationError(f"REGISTRY_CONFIG lists no instance or content types: {text}")
        return spec

    @property
    def initial_status(self) -> str:
        return APPROVED if self.auto_approve else PENDING


# -- names -------------------------------------------------------------------------------------------------
def package_arn(region: str, account: str, group: str, version: int) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:model-package/{group.lower()}/{version}"


def parse_package_arn(arn: str) -> tuple[str, int] | None:
    """(group, version) of a versioned package's ARN; None for anything else."""
    match = _PACKAGE_ARN.match(arn)
    return (match["group"], int(match["version"])) if match else None


def client_token(job_name: str) -> str:
    """CreateModelPackage's idempotency token for a training job: the same on every retry of its Register
    stage ([a-zA-Z0-9-], at most 36 characters)."""
    return hashlib.sha256(f"register:{job_name}".encode()).hexdigest()[:36]


def description(job_name: str, commit: str, data_version: str) -> str:
    """The package's description starts with its training job: ListModelPackages returns descriptions,
    so a retried Register finds the job's package without describing every package."""
    return f"{DESCRIPTION_PREFIX}{job_name} (commit {commit[:12]}, data v{data_version})"


def job_of_description(text: str | None) -> str | None:
    match = _DESCRIPTION_JOB.match(text or "")
    return match["job"] if match else None


def image_by_digest(image_uri: str, digest: str) -> str:
    """`<repository>@sha256:...`: the package names the exact image, not a tag that could move."""
    if not digest:
        return image_uri
    repository = image_uri.split("@", 1)[0]
    name_start = repository.rfind("/") + 1
    tag = repository.find(":", name_start)
    return f"{repository[:tag] if tag != -1 else repository}@{digest}"


def evaluation_key(model_prefix: str, job_name: str) -> str:
    return f"{model_prefix}{job_name}/{EVALUATION_NAME}"


def metadata(values: Mapping[str, str | None]) -> dict[str, str]:
    """CustomerMetadataProperties: known values only, each within SageMaker's length limit."""
    properties = {}
    for key, value in values.items():
        if not value:
            continue
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(
                f"metadata {key} is longer than {MAX_METADATA_VALUE} characters: {value[:80]}..."
            )
        properties[key] = value
    return properties


# -- reading the registry ------------------------------------------------------------------------------------
def summaries(sagemaker: Any, group: str, **filters: Any) -> Iterator[dict[str, Any]]:
    """ListModelPackages of the group, newest first, page by page."""
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        **filters,
    }
    while True:
        page = sagemaker.list_model_packages(**request)
        yield from page.get("ModelPackageSummaryList", [])
        token = page.get("NextToken")
        if not token:
            return
        request["NextToken"] = token


def latest_approved(sagemaker: Any, group: str) -> dict[str, Any] | None:
    """The newest Approved package of the group (the model in production) as DescribeModelPackage gives it."""
    for summary in summaries(sagemaker, group, ModelApprovalStatus=APPROVED, MaxResults=1):
        return dict(sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"]))
    return None


def find_package_of_job(
    sagemaker: Any, group: str, job_name: str, created_after: datetime | None
) -> str | None:
    """The ARN of the package registered for this training job, if there is one (packages are created after
    their job ended, so only those are listed)."""
    filters = {"CreationTimeAfter": created_after} if created_after else {}
    for summary in summaries(sagemaker, group, **filters):
        if job_of_description(summary.get("ModelPackageDescription")) == job_name:
            return str(summary["ModelPackageArn"])
    return None


def evaluation_uri(package: Mapping[str, Any]) -> str | None:
    statistics = ((package.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
    uri = statistics.get("S3Uri")
    return str(uri) if uri else None


def identity(user: Mapping[str, Any] | None) -> str | None:
    """Who, from a UserContext (CreatedBy, LastModifiedBy): the IAM identity's ARN, else the Studio user."""
    if not user:
        return None
    iam = user.get("IamIdentity") or {}
    return iam.get("Arn") or user.get("UserProfileName") or user.get("UserProfileArn") or None


def decided_by(package: Mapping[str, Any]) -> str:
    """The identity behind the package's current approval status: who last modified it, or, for a package
    created Approved and never modified since (auto_approve), who created it."""
    return identity(package.get("LastModifiedBy")) or identity(package.get("CreatedBy")) or "unknown"


# -- the commands a person runs ------------------------------------------------------------------------------
def approve_command(arn: str) -> str:
    return f'mlpipe-runs approve {arn} --reason "<why this model may go to production>"'


def reject_command(arn: str) -> str:
    return f'mlpipe-runs reject {arn} --reason "<why not>"'


def cli_command(arn: str, status: str) -> str:
    return (
        f"aws sagemaker update-model-package --model-package-arn {arn} "
        f'--model-approval-status {status} --approval-description "<reason>"'
    )
