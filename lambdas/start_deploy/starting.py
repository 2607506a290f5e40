"""What start-deploy does with one *SageMaker Model Package State Change* to Approved: start the deploy
pipeline for that package.

1. the request object (the deploy pipeline's S3 source, which CodePipeline requires; it names the latest
   request, the `PACKAGE_ARN` variable is what each execution deploys);
2. StartPipelineExecution with `PACKAGE_ARN` and a client request token derived from the event id.

Guarantees (events delivered at least once and in any order, a crash or lost response between calls):
- one execution per approval event: a redelivery or a retry sends the same client request token, and
  CodePipeline starts no second execution for it;
- an event for another group, or not an approval, starts nothing (the rule already filters; this checks);
- a malformed event raises BadInputError (retried, then dead-lettered) and starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from pipeline_common import aws, model_package
from pipeline_common.errors import BadInputError

logger = logging.getLogger(__name__)
DETAIL_TYPE = "SageMaker Model Package State Change"


@dataclass(frozen=True)
class Approval:
    event_id: str
    package_arn: str
    group: str
    status: str


def parse_event(event: Any) -> Approval:
    detail = event.get("detail") if isinstance(event, dict) else None
    if not isinstance(detail, dict) or event.get("detail-type") != DETAIL_TYPE or not event.get("id"):
        raise BadInputError("not a SageMaker Model Package State Change event")
    arn = detail.get("ModelPackageArn")
    if not isinstance(arn, str) or model_package.parse_package_arn(arn) is None:
        raise BadInputError(f"the event has no versioned ModelPackageArn (got {arn!r})")
    return Approval(
        str(event["id"]),
        arn,
        str(detail.get("ModelPackageGroupName")),
        str(detail.get("ModelApprovalStatus")),
    )


def request_token(event_id: str) -> str:
    """CodePipeline's clientRequestToken: [a-zA-Z0-9-]+, at most 128 characters."""
    return "approval-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]


def start(approval: Approval, group: str, pipeline: str, bucket: str, key: str) -> dict[str, Any]:
    if approval.group != group or approval.status != model_package.APPROVED:
        logger.info(
            "not an approval of group %s: nothing to deploy", group, extra={"approval": approval.__dict__}
        )
        return {"outcome": "ignored", "package_arn": approval.package_arn}
    body = {"package_arn": approval.package_arn, "event_id": approval.event_id}
    aws.client("s3").put_object(
        Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json"
    )
    token = request_token(approval.event_id)
    response = aws.client("codepipeline").start_pipeline_execution(
        name=pipeline,
        variables=[{"name": "PACKAGE_ARN", "value": approval.package_arn}],
        clientRequestToken=token,
    )
    return {
        "outcome": "started",
        "package_arn": approval.package_arn,
        "execution_id": str(response.get("pipelineExecutionId", "")),
        "client_request_token": token,
    }
