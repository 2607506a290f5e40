"""What record-deployment does with one SageMaker Endpoint Deployment State Change or Transform Job State
Change event of this project: the audit entry on the deployed package's training job record, and one
email per outcome.

Endpoint deployments (names: `pipeline_common.endpoints`; the config name carries the package version):
- a deployment in progress (`PendingDeploymentSummary`, or Creating): the pending config's deployment is
  recorded as Deploying with SageMaker's variant status message (no email);
- RollingBack with a pending config: that config's deployment is RolledBack, with the first rollback alarm
  that went into ALARM since it started (DescribeAlarmHistory), and emailed;
- InService with no pending deployment: the current config's deployment is InService, and emailed;
- Failed: the current config's deployment is Failed, with DescribeEndpoint's FailureReason, and emailed.
Transform jobs: `transform:<job name>` with status, input, output and times; terminal ones emailed.

The event is a hint: the endpoint and the transform job are described (DescribeEndpoint,
DescribeTransformJob), and their current state is what is recorded.

Guarantees (events delivered at least once and in any order, a crash or lost response between calls):
each entry only moves forward (`deployments.record_deployment`); each outcome is emailed once by whichever
of deploy-model and record-deployment records it first (one email lease per outcome); an event about
another project's endpoint or an unknown version writes nothing; a malformed event raises BadInputError.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pipeline_common import audit, aws, deployments, endpoints, model_package, notify
from pipeline_common.errors import BadInputError

logger = logging.getLogger(__name__)

DEPLOYMENT = "SageMaker Endpoint Deployment State Change"
TRANSFORM = "SageMaker Transform Job State Change"
TRANSFORM_RANK = {"InProgress": 0, "Stopping": 1, "Completed": 2, "Failed": 2, "Stopped": 2}


def _normalized(status: Any) -> str:
    """Events say IN_SERVICE, DescribeEndpoint InService."""
    return str(status or "").replace("_", "").lower()


def stage_of(settings: deployments.DeploySettings, endpoint: str) -> str | None:
    for stage in endpoints.STAGES:
        if endpoint == endpoints.endpoint_name(settings.project_name, settings.env_name, stage):
            return stage
    return None


def _package(settings: deployments.DeploySettings, account: str, version: int) -> deployments.Package:
    """The group's package of that version (the rule accepts this account's events only)."""
    arn = model_package.package_arn(aws.region(), account, settings.model_package_group, version)
    return deployments.Package.describe(arn, settings.model_package_group)


def handle_event(
    settings: deployments.DeploySettings, event: dict[str, Any], invocation: str
) -> dict[str, Any]:
    detail = event.get("detail")
    if not isinstance(detail, dict) or not event.get("account"):
        raise BadInputError("the event has no detail or account")
    account = str(event["account"])
    if event.get("detail-type") == DEPLOYMENT:
        return _deployment(settings, account, detail, invocation)
    if event.get("detail-type") == TRANSFORM:
        return _transform(settings, account, detail, invocation)
    raise BadInputError(f"unexpected detail-type {event.get('detail-type')!r}")


def _deployment(
    settings: deployments.DeploySettings, account: str, detail: dict[str, Any], invocation: str
) -> dict[str, Any]:
    name = detail.get("EndpointName")
    stage = stage_of(settings, str(name))
    if stage is None:
        return {"outcome": "ignored", "reason": f"{name} is not one of this project's endpoints"}
    described = aws.client("sagemaker").describe_endpoint(EndpointName=name)
    status = _normalized(described.get("EndpointStatus"))
    current = str(described.get("EndpointConfigName") or "")
    pending = (described.get("PendingDeploymentSummary") or detail.get("PendingDeploymentSummary") or {}).get(
        "EndpointConfigName"
    )
    if status == "rollingback" and pending:
        return _finish(
            settings,
            account,
            stage,
            str(name),
            str(pending),
            deployments.ROLLED_BACK,
            invocation,
            previous_config=current,
            since=described.get("LastModifiedTime"),
        )
    if status in ("updating", "creating", "systemupdating") and (pending or status == "creating"):
        config = str(pending or current)
        version = endpoints.version_of_config(config)
        if version is None:
            return {"outcome": "ignored", "reason": f"{config} names no package version"}
        package = _package(settings, account, version)
        message = _variant_message(described.get("PendingDeploymentSummary") or {})
        written = deployments.record_deployment(
            settings.audit_table_name,
            package.job_name,
            stage,
            version,
            {
                "status": deployments.STARTED,
                "endpoint": name,
                "endpoint_config": config,
                "model_package_arn": package.arn,
                "progress": message,
                "started_at": audit.now_iso(),
            },
        )
        return {
            "outcome": "recorded" if written else "unchanged",
            "status": deployments.STARTED,
            "version": version,
        }
    if status == "inservice":
        return _finish(settings, account, stage, str(name), current, deployments.IN_SERVICE, invocation)
    if status == "failed":
        return _finish(
            settings,
            account,
            stage,
            str(name),
            current,
            deployments.FAILED,
            invocation,
            reason=str(described.get("FailureReason") or ""),
        )
    return {"outcome": "ignored", "reason": f"status {described.get('EndpointStatus')}"}


def _variant_message(summary: dict[str, Any]) -> str:
    for variant in summary.get("ProductionVariants") or []:
        for status in variant.get("VariantStatus") or []:
            return f"{status.get('Status')}: {status.get('StatusMessage')}"
    return ""


def _finish(
    settings: deployments.DeploySettings,
    account: str,
    stage: str,
    endpoint: str,
    config: str,
    status: str,
    invocation: str,
    *,
    previous_config: str | None = None,
    since: Any = None,
    reason: str = "",
) -> dict[str, Any]:
    version = endpoints.version_of_config(config)
    if version is None:
        return {"outcome": "ignored", "reason": f"{config} names no package version"}
    package = _package(settings, account, version)
    fields: dict[str, Any] = {
        "status": status,
        "endpoint": endpoint,
        "endpoint_config": config,
        "model_package_arn": package.arn,
    }
    if status == deployments.ROLLED_BACK:
        record = audit.get_record(settings.audit_table_name, package.job_name) or {}
        started = deployments.deployment_of(record, stage, version).get("started_at")
        start = datetime.fromisoformat(started) if started else since
        fields.update(
            {
                "previous_config": previous_config,
                "alarm": deployments.fired_alarm(endpoints.alarm_names(endpoint), start) if start else None,
            }
        )
    if reason:
        fields["reason"] = reason
    emailed = deployments.finish(settings, package.job_name, stage, version, fields, invocation)
    return {"outcome": "recorded", "status": status, "version": version, "emailed": emailed}


def _transform(
    settings: deployments.DeploySettings, account: str, detail: dict[str, Any], invocation: str
) -> dict[str, Any]:
    name = str(detail.get("TransformJobName") or "")
    prefix = f"{settings.project_name}-{settings.env_name}-transform-v"
    if not name.startswith(prefix):
        return {"outcome": "ignored", "reason": f"{name} is not one of this project's transform jobs"}
    job = aws.client("sagemaker").describe_transform_job(TransformJobName=name)
    version = int(str(job["ModelName"]).rsplit("-v", 1)[1])
    package = _package(settings, account, version)
    status = str(job["TransformJobStatus"])
    entry = audit.clean(
        {
            "status": status,
            "rank": TRANSFORM_RANK.get(status, 0),
            "model_package_version": version,
            "input": (job.get("TransformInput") or {})
            .get("DataSource", {})
            .get("S3DataSource", {})
            .get("S3Uri"),
            "output": (job.get("TransformOutput") or {}).get("S3OutputPath"),
            "started_at": audit.iso_from_millis(job.get("TransformStartTime")),
            "ended_at": audit.iso_from_millis(job.get("TransformEndTime")),
            "failure_reason": job.get("FailureReason"),
        }
    )
    attribute = f"transform:{name}"
    try:
        aws.client("dynamodb").update_item(
            TableName=settings.audit_table_name,
            Key={"job_name": {"S": package.job_name}},
            UpdateExpression="SET #t = :t",
            ConditionExpression="attribute_exists(#job) AND (attribute_not_exists(#t) OR #t.#rank < :rank)",
            ExpressionAttributeNames={"#t": attribute, "#job": "job_name", "#rank": "rank"},
            ExpressionAttributeValues={":t": audit.to_attribute(entry), ":rank": {"N": str(entry["rank"])}},
        )
    except ClientError as error:
        if aws.error_code(error) != audit.CONDITIONAL_CHECK_FAILED:
            raise
    emailed = False
    if entry["rank"] == 2:

        def email(record: dict[str, Any]) -> notify.Email:
            head = f"transform job {name} {status.lower()}"
            lines = [
                f"{head}.",
                "",
                f"Package v{version}: {package.arn}",
                f"Input:  {entry.get('input')}",
                f"Output: {entry.get('output')}",
            ]
            if entry.get("failure_reason"):
                lines += ["", f"Reason: {entry['failure_reason']}"]
            return notify.Email(
                subject=deployments.subject(settings, head, package.job_name),
                body="\n".join(lines) + "\n",
                attributes={
                    "event": deployments.EVENT_TRANSFORM,
                    "status": status,
                    "project": settings.project_name,
                    "environment": settings.env_name,
                },
            )

        emailed = deployments.email_once(
            settings, package.job_name, f"{attribute}:{status}", email, invocation
        )
    return {"outcome": "recorded", "status": status, "version": version, "emailed": emailed}
