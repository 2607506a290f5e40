"""A local stand-in for the SageMaker Model Registry: model package groups and versioned model packages.

Why not moto's (5.2): it ignores CreateModelPackage's ClientToken (a retried create makes a second
version), reports a made-up Studio user as CreatedBy and LastModifiedBy, drops a package's
CustomerMetadataProperties and ApprovalDescription on an UpdateModelPackage that does not repeat them,
and emits no EventBridge events. The pipeline relies on all four.

What this one does, as the service does:
- every request is validated against botocore's service model (types, required members, lengths, ranges,
  enums and the patterns Python can read), and answered in its output shape;
- versions count from 1 per group; a ClientToken already used in the group returns that package;
- CreatedBy and LastModifiedBy are the caller's own principal, which the gateway passes in (an IAM user's
  or an assumed role session's ARN), so an approval records who really made it;
- UpdateModelPackage changes only what it is given (metadata merges; `...ToRemove` removes);
- each create and each change of approval status is reported as a *SageMaker Model Package State Change*
  event shaped like AWS's published sample (tests/fixtures/aws_samples): the package's fields without
  CreatedBy, LastModifiedBy, ApprovalDescription or CustomerMetadataProperties, times as ISO strings.

State lives in memory, and, with a `store`, is saved after every change and loaded at start: the local
run keeps it in the emulator's S3, so packages live exactly as long as the emulator does (the next run
against the same `--endpoint-url` compares with the package approved in an earlier one).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import botocore.session
from botocore.exceptions import ClientError, ParamValidationError
from botocore.validate import validate_parameters

from mlpipe.local.emulator import ACCOUNT

StateChangeListener = Callable[[dict[str, Any]], None]
DETAIL_TYPE = "SageMaker Model Package State Change"
# The sample event's detail, in its order: DescribeModelPackage's fields that the event carries.
EVENT_DETAIL_FIELDS = (
    "ModelPackageGroupName",
    "ModelPackageVersion",
    "ModelPackageArn",
    "CreationTime",
    "InferenceSpecification",
    "ModelPackageStatus",
    "ModelPackageStatusDetails",
    "CertifyForMarketplace",
    "ModelApprovalStatus",
    "MetadataProperties",
    "ModelMetrics",
    "LastModifiedTime",
)
# What CreateModelPackage keeps and DescribeModelPackage gives back as it was sent.
KEPT_FROM_CREATE = (
    "ModelPackageDescription",
    "InferenceSpecification",
    "ValidationSpecification",
    "SourceAlgorithmSpecification",
    "CertifyForMarketplace",
    "MetadataProperties",
    "ModelMetrics",
    "Domain",
    "Task",
    "SamplePayloadUrl",
    "CustomerMetadataProperties",
    "DriftCheckBaselines",
    "AdditionalInferenceSpecifications",
    "SkipModelValidation",
    "SourceUri",
)
SUMMARY_FIELDS = (
    "ModelPackageGroupName",
    "ModelPackageVersion",
    "ModelPackageArn",
    "ModelPackageDescription",
    "CreationTime",
    "ModelPackageStatus",
    "ModelApprovalStatus",
)
DEFAULT_PAGE = 10


@functools.cache
def _model() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _check_constraints(value: Any, shape: Any, path: str) -> None:
    """What `validate_parameters` leaves out: max lengths, ranges, enums and (Python-readable) patterns."""
    if value is None:
        return
    metadata, kind = shape.metadata, shape.type_name
    if kind == "structure":
        for name, member in shape.members.items():
            _check_constraints(value.get(name), member, f"{path}.{name}")
    elif kind == "list":
        if "max" in metadata and len(value) > metadata["max"]:
            raise ParamValidationError(report=f"{path}: at most {metadata['max']} items, got {len(value)}")
        for index, item in enumerate(value):
            _check_constraints(item, shape.member, f"{path}[{index}]")
    elif kind == "map":
        if "max" in metadata and len(value) > metadata["max"]:
            raise ParamValidationError(report=f"{path}: at most {metadata['max']} entries, got {len(value)}")
        for key, item in value.items():
            _check_constraints(key, shape.key, f"{path} key")
            _check_constraints(item, shape.value, f"{path}[{key}]")
    elif kind == "string":
        if "max" in metadata and len(value) > metadata["max"]:
            raise ParamValidationError(
                report=f"{path}: at most {metadata['max']} characters, got {len(value)}"
            )
        if shape.enum and value not in shape.enum:
            raise ParamValidationError(report=f"{path}: {value!r} is not one of {', '.join(shape.enum)}")
        pattern = metadata.get("pattern")
        if pattern and "\\p{" not in pattern and re.fullmatch(pattern, value) is None:
            raise ParamValidationError(report=f"{path}: {value!r} does not match {pattern}")
    elif kind in ("integer", "long", "double", "float") and (
        ("min" in metadata and value < metadata["min"]) or ("max" in metadata and value > metadata["max"])
    ):
        raise ParamValidationError(report=f"{path}: {value} is out of range")


def validate_request(operation: str, params: dict[str, Any]) -> None:
    shape = _model().operation_model(operation).input_shape
    validate_parameters(params, shape)
    _check_constraints(params, shape, operation)


def _now() -> datetime:
    return datetime.now(UTC)


def _event_time(moment: datetime) -> str:
    """Times as the published sample gives them: "2021-02-24T17:00:14Z"."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RegistryStore(Protocol):
    """Where the registry's state outlives the process (the local run: one object in the emulator's S3)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


@dataclass
class S3RegistryStore:
    """The registry's state as one JSON object in a bucket of the emulator."""

    s3: Any
    bucket: str
    key: str = "model-registry.json"

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


def _user_context(principal: str) -> dict[str, Any]:
    """A UserContext for an IAM caller, as DescribeModelPackage reports CreatedBy and LastModifiedBy."""
    return {
        "IamIdentity": {
            "Arn": principal or "unknown",
            "PrincipalId": principal.rsplit("/", 1)[-1] or "unknown",
        }
    }


class LocalModelRegistry:
    """The model registry operations of SageMaker (see the module docstring)."""

    signing_name = "sagemaker"
    OPERATIONS: ClassVar[dict[str, str]] = {
        "CreateModelPackageGroup": "_create_group",
        "DescribeModelPackageGroup": "_describe_group",
        "ListModelPackageGroups": "_list_groups",
        "CreateModelPackage": "_create_package",
        "DescribeModelPackage": "_describe_package",
        "ListModelPackages": "_list_packages",
        "UpdateModelPackage": "_update_package",
    }

    def __init__(
        self,
        region: str,
        on_state_change: StateChangeListener,
        account: str = ACCOUNT,
        store: RegistryStore | None = None,
    ) -> None:
        self._region = region
        self._account = account
        self._on_state_change = on_state_change
        self._store = store
        self._lock = threading.RLock()
        self.groups: dict[str, dict[str, Any]] = {}
        self.packages: dict[str, dict[str, Any]] = {}  # ARN -> DescribeModelPackage's answer
        self._tokens: dict[tuple[str, str], str] = {}  # (group, ClientToken) -> ARN
        saved = store.load() if store is not None else None
        if saved:
            self._restore(saved)

    # -- LocalService ------------------------------------------------------------------------------------
    def implements(self, operation: str) -> bool:
        return operation in self.OPERATIONS

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        # Tags on create need AddTags too, as for every SageMaker resource.
        return ["sagemaker:AddTags"] if operation.startswith("Create") and params.get("Tags") else []

    def call(self, operation: str, params: dict[str, Any], principal: str = "") -> dict[str, Any]:
        validate_request(operation, params)
        with self._lock:
            result, events = getattr(self, self.OPERATIONS[operation])(params, principal)
            if events and self._store is not None:
                self._store.save(self._snapshot())
        # `None` marks a change that is saved but reported by no event. Outside the lock: a listener may call
        # back into the registry.
        for event in events:
            if event is not None:
                self._on_state_change(event)
        return result  # type: ignore[no-any-return]

    # -- groups ----------------------------------------------------------------------------------------
    def _group_arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self._region}:{self._account}:model-package-group/{name.lower()}"

    def _group_name(self, name_or_arn: str, operation: str) -> str:
        name = name_or_arn.rsplit("/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn
        if name not in self.groups:
            raise _error(
                "ValidationException", f"Model Package Group {name_or_arn} does not exist.", operation
            )
        return name

    def _create_group(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        name = params["ModelPackageGroupName"]
        if name in self.groups:
            raise _error(
                "ValidationException",
                f"Model Package Group already exists: {self._group_arn(name)}",
                "CreateModelPackageGroup",
            )
        self.groups[name] = {
            "ModelPackageGroupName": name,
            "ModelPackageGroupArn": self._group_arn(name),
            "ModelPackageGroupDescription": params.get("ModelPackageGroupDescription", ""),
            "CreationTime": _now(),
            "CreatedBy": _user_context(principal),
            "ModelPackageGroupStatus": "Completed",
        }
        return {"ModelPackageGroupArn": self._group_arn(name)}, [None]

    def _describe_group(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        name = self._group_name(params["ModelPackageGroupName"], "DescribeModelPackageGroup")
        return copy.deepcopy(self.groups[name]), []

    def _list_groups(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        groups = [
            g for g in self.groups.values() if params.get("NameContains", "") in g["ModelPackageGroupName"]
        ]
        key = "ModelPackageGroupName" if params.get("SortBy") == "Name" else "CreationTime"
        groups.sort(key=lambda g: g[key], reverse=params.get("SortOrder") == "Descending")
        page, token = self._page(groups, params)
        summaries = [
            {
                k: g[k]
                for k in (
                    "ModelPackageGroupName",
                    "ModelPackageGroupArn",
                    "ModelPackageGroupDescription",
                    "CreationTime",
                    "ModelPackageGroupStatus",
                )
            }
            for g in page
        ]
        return {"ModelPackageGroupSummaryList": summaries, **({"NextToken": token} if token else {})}, []

    # -- packages --------------------------------------------------------------------------------------
    def _package(self, arn: str, operation: str) -> dict[str, Any]:
        package = self.packages.get(arn)
        if package is None:
            raise _error("ValidationException", f"Model package {arn} does not exist.", operation)
        return package

    def _create_package(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        operation = "CreateModelPackage"
        if params.get("ModelPackageName") or not params.get("ModelPackageGroupName"):
            raise _error(
                "ValidationException",
                "This stand-in registers versioned packages only: give ModelPackageGroupName, not ModelPackageName.",
                operation,
            )
        group = self._group_name(params["ModelPackageGroupName"], operation)
        token = params.get("ClientToken")
        if token and (group, token) in self._tokens:
            # The same request again (a retry): the service answers with the package it created then.
            return {"ModelPackageArn": self._tokens[(group, token)]}, []
        version = 1 + sum(1 for p in self.packages.values() if p["ModelPackageGroupName"] == group)
        arn = f"arn:aws:sagemaker:{self._region}:{self._account}:model-package/{group.lower()}/{version}"
        now = _now()
        package: dict[str, Any] = {
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelPackageArn": arn,
            "CreationTime": now,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "ModelApprovalStatus": params.get("ModelApprovalStatus", "PendingManualApproval"),
            "CreatedBy": _user_context(principal),
            "LastModifiedTime": now,
            "CertifyForMarketplace": False,
            **{k: copy.deepcopy(params[k]) for k in KEPT_FROM_CREATE if k in params},
        }
        self.packages[arn] = package
        if token:
            self._tokens[(group, token)] = arn
        return {"ModelPackageArn": arn}, [self._event(package)]

    def _describe_package(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        return copy.deepcopy(self._package(params["ModelPackageName"], "DescribeModelPackage")), []

    def _list_packages(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        group = params.get("ModelPackageGroupName")
        if group:
            group = self._group_name(group, "ListModelPackages")
        after, before = params.get("CreationTimeAfter"), params.get("CreationTimeBefore")
        after = _as_time(after) if after is not None else None
        before = _as_time(before) if before is not None else None
        packages = [
            p
            for p in self.packages.values()
            if (group is None or p["ModelPackageGroupName"] == group)
            and (params.get("ModelApprovalStatus") in (None, p["ModelApprovalStatus"]))
            and (after is None or p["CreationTime"] > after)
            and (before is None or p["CreationTime"] < before)
        ]
        # Versions are created in order: the version breaks ties between packages of the same instant.
        packages.sort(
            key=lambda p: (p["CreationTime"], p["ModelPackageVersion"]),
            reverse=params.get("SortOrder") == "Descending",
        )
        page, token = self._page(packages, params)
        summaries = [{k: p[k] for k in SUMMARY_FIELDS if k in p} for p in page]
        return {
            "ModelPackageSummaryList": copy.deepcopy(summaries),
            **({"NextToken": token} if token else {}),
        }, []

    def _update_package(self, params: dict[str, Any], principal: str) -> tuple[dict[str, Any], list[Any]]:
        package = self._package(params["ModelPackageArn"], "UpdateModelPackage")
        before = package.get("ModelApprovalStatus")
        if "ModelApprovalStatus" in params:
            package["ModelApprovalStatus"] = params["ModelApprovalStatus"]
        if "ApprovalDescription" in params:
            package["ApprovalDescription"] = params["ApprovalDescription"]
        if "CustomerMetadataProperties" in params:
            package["CustomerMetadataProperties"] = {
                **package.get("CustomerMetadataProperties", {}),
                **params["CustomerMetadataProperties"],
            }
        for key in params.get("CustomerMetadataPropertiesToRemove", []):
            package.get("CustomerMetadataProperties", {}).pop(key, None)
        package["LastModifiedTime"] = _now()
        package["LastModifiedBy"] = _user_context(principal)
        changed = package.get("ModelApprovalStatus") != before
        # A state change, saved and reported; other updates are saved too (the store needs them).
        return {"ModelPackageArn": package["ModelPackageArn"]}, [self._event(package) if changed else None]

    # -- internals ---------------------------------------------------------------------------------------
    @staticmethod
    def _page(items: list[Any], params: dict[str, Any]) -> tuple[list[Any], str | None]:
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or DEFAULT_PAGE)
        end = start + size
        return items[start:end], (str(end) if end < len(items) else None)

    def _event(self, package: dict[str, Any]) -> dict[str, Any]:
        detail = {name: copy.deepcopy(package[name]) for name in EVENT_DETAIL_FIELDS if name in package}
        for name in ("CreationTime", "LastModifiedTime"):
            if name in detail:
                detail[name] = _event_time(detail[name])
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": DETAIL_TYPE,
            "source": "aws.sagemaker",
            "account": self._account,
            "time": _event_time(package.get("LastModifiedTime") or package["CreationTime"]),
            "region": self._region,
            "resources": [package["ModelPackageArn"]],
            "detail": detail,
        }

    def _snapshot(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "packages": self.packages,
            "tokens": [[group, token, arn] for (group, token), arn in self._tokens.items()],
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        def times(item: dict[str, Any]) -> dict[str, Any]:
            for name in ("CreationTime", "LastModifiedTime"):
                if isinstance(item.get(name), str):
                    item[name] = datetime.fromisoformat(item[name])
            return item

        self.groups = {name: times(group) for name, group in saved.get("groups", {}).items()}
        self.packages = {arn: times(package) for arn, package in saved.get("packages", {}).items()}
        self._tokens = {(group, token): arn for group, token, arn in saved.get("tokens", [])}


def _as_time(value: Any) -> datetime:
    """A timestamp as the JSON protocol sends it (epoch seconds) or as a datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)
