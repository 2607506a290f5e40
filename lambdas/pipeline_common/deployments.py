"""The deploy half's settings, its audit entries and its emails, as plain functions.

Deployments go on the audit record of the training job whose package they deploy (the package's
`training-job` metadata), like the gate, the package and the approvals: one GetItem gives a model's whole
lineage, and `runs` listings stay queries on the same indexes. Each deployment is one attribute,
`deployment:<stage>:v<version>` (a map), written only forward: its `rank` (0 started, 1 finished) never
goes back, so a redelivered event or a retried step cannot undo a later state. Transform jobs are
`transform:<job name>` the same way.

Each outcome is emailed once (the record's email lease, `audit.take_email_lease`), whichever of
deploy-model and record-deployment sees it first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from pipeline_common import audit, aws, model_package, notify
from pipeline_common.errors import ConfigurationError

STARTED, IN_SERVICE, FAILED, ROLLED_BACK = "Deploying", "InService", "Failed", "RolledBack"
RANK = {STARTED: 0, IN_SERVICE: 1, FAILED: 1, ROLLED_BACK: 1}
EMAILED_OUTCOMES = (IN_SERVICE, FAILED, ROLLED_BACK)
EVENT_DEPLOYMENT = "deployment"
EVENT_TRANSFORM = "transform"
ATTRIBUTE_PREFIX = "deployment:"  # every deployment entry's attribute name starts with it


def _env(name: str, purpose: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set ({purpose})")
    return value


@dataclass(frozen=True)
class DeploySettings:
    project_name: str
    env_name: str
    pipeline_name: str
    audit_table_name: str
    topic_arn: str
    model_package_group: str
    deploy: dict[str, Any]  # DEPLOY_CONFIG (stacks.config.DeployConfig as JSON)
    endpoint_role_arn: str = ""
    kms_key_arn: str = ""
    capture_uri: str = ""
    model_bucket: str = ""
    data_bucket: str = ""
    staging_api_url: str = ""

    @classmethod
    def from_env(cls) -> DeploySettings:
        raw = os.environ.get("DEPLOY_CONFIG", "").strip()
        return cls(
            project_name=_env("PROJECT_NAME", "names the endpoints"),
            env_name=_env("ENV_NAME", "names the endpoints"),
            pipeline_name=_env("PIPELINE_NAME", "for console links"),
            audit_table_name=_env("AUDIT_TABLE_NAME", "the DynamoDB audit table"),
            topic_arn=_env("TOPIC_ARN", "the SNS topic for notification emails"),
            model_package_group=_env("MODEL_PACKAGE_GROUP_NAME", "the model registry's group"),
            deploy=json.loads(raw) if raw else {},
            endpoint_role_arn=os.environ.get("ENDPOINT_ROLE_ARN", ""),
            kms_key_arn=os.environ.get("KMS_KEY_ARN", ""),
            capture_uri=os.environ.get("CAPTURE_URI", ""),
            model_bucket=os.environ.get("MODEL_BUCKET", ""),
            data_bucket=os.environ.get("DATA_BUCKET", ""),
            staging_api_url=os.environ.get("STAGING_API_URL", ""),
        )


@dataclass(frozen=True)
class Package:
    """An approved package of this project's group, as DescribeModelPackage has it."""

    arn: str
    version: int
    job_name: str
    status: str
    model_data_url: str = ""  # the training job's model.tar.gz, as the package's inference spec names it

    @classmethod
    def describe(cls, arn: str, group: str) -> Package:
        from pipeline_common.errors import BadInputError

        parsed = model_package.parse_package_arn(arn)
        if parsed is None or parsed[0] != group:
            raise BadInputError(f"{arn} is not a package of this project's group {group}")
        described = aws.client("sagemaker").describe_model_package(ModelPackageName=arn)
        metadata = described.get("CustomerMetadataProperties") or {}
        job = metadata.get(model_package.META_TRAINING_JOB) or model_package.job_of_description(
            described.get("ModelPackageDescription")
        )
        if not job:
            raise BadInputError(f"{arn} names no training job (CustomerMetadataProperties or description)")
        containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
        return cls(
            arn,
            int(described["ModelPackageVersion"]),
            str(job),
            str(described["ModelApprovalStatus"]),
            str(containers[0].get("ModelDataUrl") or ""),
        )


def deployment_attribute(stage: str, version: int) -> str:
    return f"{ATTRIBUTE_PREFIX}{stage}:v{version}"


def record_deployment(table: str, job_name: str, stage: str, version: int, fields: Mapping[str, Any]) -> bool:
    """Write the deployment's state if it moves forward (rank grows; the first write of a rank sets it).
    True: written; False: the record already had this or a later state (nothing changed)."""
    status = str(fields["status"])
    attribute = deployment_attribute(stage, version)
    # What the start recorded (its config, its time) stays; the condition below still decides the write.
    earlier = deployment_of(audit.get_record(table, job_name) or {}, stage, version)
    entry = {
        **earlier,
        **audit.clean(fields),
        "stage": stage,
        "model_package_version": version,
        "rank": RANK[status],
    }
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key={"job_name": {"S": job_name}},
            UpdateExpression="SET #dep = :entry, #updated = :now",
            ConditionExpression="attribute_exists(#job) AND (attribute_not_exists(#dep) OR #dep.#rank < :rank)",
            ExpressionAttributeNames={
                "#dep": attribute,
                "#job": "job_name",
                "#rank": "rank",
                "#updated": "updated_at",
            },
            ExpressionAttributeValues={
                ":entry": audit.to_attribute(entry),
                ":rank": {"N": str(RANK[status])},
                ":now": {"S": audit.now_iso()},
            },
        )
        return True
    except ClientError as error:
        if aws.error_code(error) != audit.CONDITIONAL_CHECK_FAILED:
            raise
        return False


def deployment_of(record: Mapping[str, Any], stage: str, version: int) -> dict[str, Any]:
    return dict(record.get(deployment_attribute(stage, version)) or {})


def deployment_email(
    settings: DeploySettings, record: Mapping[str, Any], entry: Mapping[str, Any]
) -> notify.Email:
    stage, status, version = entry["stage"], entry["status"], entry["model_package_version"]
    head = {
        IN_SERVICE: f"v{version} is serving in {stage}",
        FAILED: f"v{version} failed to deploy to {stage}",
        ROLLED_BACK: f"v{version} rolled back in {stage}",
    }[status]
    lines = [
        f"{head}.",
        "",
        f"Endpoint:        {entry.get('endpoint')}",
        f"Endpoint config: {entry.get('endpoint_config')}",
        f"Package:         {entry.get('model_package_arn')}",
        f"Training job:    {record.get('job_name')}",
        f"Commit:          {record.get('commit_id') or 'unknown'}",
        f"Started:         {entry.get('started_at') or '?'}",
        f"Ended:           {entry.get('ended_at') or '?'}",
    ]
    if entry.get("config"):
        lines.append(f"Config:          {json.dumps(entry['config'], sort_keys=True)}")
    if status == ROLLED_BACK:
        lines += [
            "",
            f"Alarm that fired: {entry.get('alarm') or 'unknown (none of the rollback alarms has an ALARM entry)'}",
            f"Traffic is back on {entry.get('previous_config') or 'the previous model'}.",
        ]
    if entry.get("reason"):
        lines += ["", f"Reason: {entry['reason']}"]
    return notify.Email(
        subject=subject(settings, head, str(record.get("job_name"))),
        body="\n".join(lines) + "\n",
        attributes={
            "event": EVENT_DEPLOYMENT,
            "status": status,
            "stage": stage,
            "project": settings.project_name,
            "environment": settings.env_name,
        },
    )


def subject(settings: DeploySettings, head: str, job_name: str) -> str:
    """`[project/env] <head>: <training job>` within SNS's limit, as the training emails do."""
    return notify.fit_subject(f"[{settings.project_name}/{settings.env_name}] {head}: ", job_name, ("",))


def email_once(settings: DeploySettings, job_name: str, key: str, build: Any, token: str) -> bool:
    """Send the email `key` about the record once (lease, send, mark). True if this call sent it."""
    if not audit.take_email_lease(settings.audit_table_name, job_name, key, token):
        return False
    record = audit.get_record(settings.audit_table_name, job_name) or {}
    notify.send(settings.topic_arn, build(record))
    audit.mark_emailed(settings.audit_table_name, job_name, key)
    return True


def finish(
    settings: DeploySettings, job_name: str, stage: str, version: int, fields: Mapping[str, Any], token: str
) -> bool:
    """Record a finished deployment (InService, Failed, RolledBack) and email it once. True if emailed now."""
    record_deployment(
        settings.audit_table_name,
        job_name,
        stage,
        version,
        {**fields, "ended_at": fields.get("ended_at") or audit.now_iso()},
    )
    record = audit.get_record(settings.audit_table_name, job_name) or {}
    entry = deployment_of(record, stage, version)
    if entry.get("status") not in EMAILED_OUTCOMES:
        return False
    key = f"{deployment_attribute(stage, version)}:{entry['status']}"
    return email_once(
        settings,
        job_name,
        key,
        lambda r: deployment_email(settings, r, deployment_of(r, stage, version)),
        token,
    )


def fired_alarm(alarm_names: tuple[str, ...], since: Any) -> str | None:
    """The first of the rollback alarms that went into ALARM since `since` (DescribeAlarmHistory), if any."""
    cloudwatch = aws.client("cloudwatch")
    fired: list[tuple[Any, str]] = []
    for name in alarm_names:
        history = cloudwatch.describe_alarm_history(
            AlarmName=name,
            HistoryItemType="StateUpdate",
            StartDate=since,
            ScanBy="TimestampAscending",
            MaxRecords=10,
        )
        for item in history.get("AlarmHistoryItems", []):
            if "to ALARM" in str(item.get("HistorySummary", "")):
                fired.append((item["Timestamp"], name))
                break
    return min(fired)[1] if fired else None
