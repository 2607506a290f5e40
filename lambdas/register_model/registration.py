"""What the register-model action does, as plain functions; the handler only parses.

It registers the training job's model as a new version in the project's model package group: the image by
digest, the model artifact, the content types the image serves, the configured inference instance types,
the evaluation document as ModelMetrics, where it came from as CustomerMetadataProperties, and
PendingManualApproval (or Approved with `auto_approve`). It records the package on the audit record and
emails that it awaits approval, with the commands that approve or reject it.

What it guarantees, with invocations delivered at least once, a crash possible between any two calls, and
any call possibly applied while its caller sees an error:
- **One package per training job.** Before creating, it looks for the job's package: on the record, then in
  the group (descriptions start with the job's name). CreateModelPackage carries a ClientToken derived
  from the job's name, so even a create whose response was lost and that the listing does not show yet
  returns the same package instead of a second one.
- **Only a model the gate passed is registered**: the record must say the gate Passed.
- **The "awaiting approval" email is sent at least once, and never after a decision**: it goes out under
  the record's email lease, only while the record's approval status is still PendingManualApproval and the
  package, described by the same invocation, still awaits a decision (a decision whose event has not
  reached record-approval yet is one). Only a decision made in the instant between that description and
  the email can precede it: no service call spans SageMaker and SNS.
- **A transient error never fails the action**; it stays open and the next invocation repeats the
  (idempotent) steps. **Each CodePipeline job takes one result.**
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from pipeline_common import audit, aws, model_package, notify, quality_gate
from pipeline_common.errors import TrainingJobError
from pipeline_common.pipeline_action import (
    SUCCEEDED,
    ActionResult,
    outcome_of_error,
    parameters,
    put_result,
)
from pipeline_common.settings import RegisterSettings

logger = logging.getLogger(__name__)

REQUIRED_PARAMETERS = (
    "training_job_name",
    "model_artifact",
    "evaluation_uri",
    "image_uri",
    "commit_id",
    "branch",
    "repo",
    "pipeline_execution_id",
)
OPTIONAL_PARAMETERS = ("image_digest",)
RETRY_TOKEN = json.dumps({"v": 1, "step": "register"})
REGISTERED_EMAIL = "model-registered"
# Packages are listed from a little before the evaluation: clocks of two services may disagree.
LISTING_MARGIN = timedelta(minutes=10)


def create_request(
    settings: RegisterSettings, params: dict[str, str], record: dict[str, Any]
) -> dict[str, Any]:
    """The CreateModelPackage request (boto3 keyword arguments)."""
    name = params["training_job_name"]
    spec = settings.package
    return {
        "ModelPackageGroupName": settings.model_package_group,
        "ModelPackageDescription": model_package.description(
            name, params["commit_id"], record["data_version"]
        ),
        "InferenceSpecification": {
            "Containers": [
                {
                    "Image": model_package.image_by_digest(params["image_uri"], params["image_digest"]),
                    "ModelDataUrl": params["model_artifact"],
                }
            ],
            "SupportedContentTypes": list(spec.content_types),
            "SupportedResponseMIMETypes": list(spec.response_types),
            "SupportedRealtimeInferenceInstanceTypes": list(spec.inference_instance_types),
        },
        "ModelApprovalStatus": spec.initial_status,
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {
                    "ContentType": model_package.EVALUATION_CONTENT_TYPE,
                    "S3Uri": params["evaluation_uri"],
                }
            }
        },
        "MetadataProperties": {
            "CommitId": params["commit_id"],
            "Repository": params["repo"],
            "GeneratedBy": f"codepipeline:{settings.pipeline_name}/{params['pipeline_execution_id']}",
        },
        "CustomerMetadataProperties": model_package.metadata(
            {
                model_package.META_COMMIT: params["commit_id"],
                model_package.META_REPO: params["repo"],
                model_package.META_BRANCH: params["branch"],
                model_package.META_DATA_MANIFEST: record.get("data_manifest"),
                model_package.META_DATA_VERSION: record.get("data_version"),
                model_package.META_IMAGE_DIGEST: params["image_digest"],
                model_package.META_TRAINING_JOB: name,
                model_package.META_EXECUTION: params["pipeline_execution_id"],
            }
        ),
        "ClientToken": model_package.client_token(name),
    }


def _listed_after(record: dict[str, Any]) -> datetime | None:
    stamp = record.get("evaluated_at") or record.get("ended_at")
    try:
        return datetime.fromisoformat(str(stamp)) - LISTING_MARGIN if stamp else None
    except ValueError:
        return None


def register(settings: RegisterSettings, params: dict[str, str]) -> ActionResult:
    name = params["training_job_name"]
    record = audit.get_record(settings.audit_table_name, name)
    if record is None:
        raise TrainingJobError(f"no audit record for training job {name}: start-training writes it first")
    if record.get("gate_status") != quality_gate.PASSED:
        raise TrainingJobError(
            f"training job {name} has not passed the quality gate (gate: {record.get('gate_status') or 'not evaluated'}); "
            "only a model that passed it is registered"
        )
    if not record.get("data_version"):
        raise TrainingJobError(f"the audit record of {name} has no data version to register with the package")
    sagemaker = aws.client("sagemaker")
    arn = record.get("model_package_arn") or model_package.find_package_of_job(
        sagemaker, settings.model_package_group, name, _listed_after(record)
    )
    if arn:
        logger.info("training job %s has its package already: %s", name, arn)
    else:
        arn = sagemaker.create_model_package(**create_request(settings, params, record))["ModelPackageArn"]
        logger.info("registered %s as %s", name, arn)
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    record = audit.record_package(
        settings.audit_table_name,
        name,
        {
            "model_package_arn": arn,
            "model_package_version": package.get("ModelPackageVersion"),
            "model_package_group": settings.model_package_group,
            "registered_at": audit.iso_from_millis(package.get("CreationTime")),
            "approval_status": package.get("ModelApprovalStatus"),
        },
    )
    # The registry's status too, not only the record's: a person may have decided since an earlier
    # invocation recorded the package as pending, and that decision's event may not have reached
    # record-approval yet. It is a decision all the same, and no "awaiting approval" email follows one.
    if (
        record.get("approval_status") == model_package.PENDING
        and package.get("ModelApprovalStatus") == model_package.PENDING
    ):
        email_registration(settings, name)
    version = str(record.get("model_package_version") or package.get("ModelPackageVersion"))
    return ActionResult(
        SUCCEEDED,
        name,
        f"Registered {name} as model package v{version} ({record.get('approval_status')})",
        {
            "MODEL_PACKAGE_ARN": arn,
            "MODEL_PACKAGE_VERSION": version,
            "APPROVAL_STATUS": str(record.get("approval_status")),
        },
    )


def email_registration(settings: RegisterSettings, name: str) -> None:
    """ "Awaiting approval", at least once, and only while no decision has been recorded."""
    token = f"register:{name}"
    table = settings.audit_table_name
    if not audit.take_email_lease(
        table, name, REGISTERED_EMAIL, token, require=("approval_status", model_package.PENDING)
    ):
        return
    record = audit.get_record(table, name) or {}
    email = notify.registered_email(settings.project_name, settings.env_name, settings.pipeline_name, record)
    notify.send(settings.topic_arn, email)
    audit.mark_emailed(table, name, REGISTERED_EMAIL)


def handle(job_id: str, raw_parameters: Any) -> ActionResult:
    """Register, decide the outcome, and report it once (see the module docstring)."""
    name: str | None = None
    try:
        settings = RegisterSettings.from_env()
        params = parameters(raw_parameters, REQUIRED_PARAMETERS, OPTIONAL_PARAMETERS)
        name = params["training_job_name"]
        result = register(settings, params)
    except Exception as error:
        result = outcome_of_error(error, name, "register-model", RETRY_TOKEN)
    put_result(job_id, result)
    return result
