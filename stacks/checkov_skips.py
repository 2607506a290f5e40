"""checkov findings we accept, each with its reason, written where checkov reads them: resource metadata.

checkov's `checkov:skip=` comments do not exist in JSON templates; it reads
`Metadata: {"checkov": {"skip": [{"id": ..., "comment": ...}]}}` on the resource instead. Every skip goes
through `skip_checks`, so the reasons live here, once, and a test keeps the list of skips exact.
"""

from __future__ import annotations

from aws_cdk import CfnResource
from constructs import IConstruct

REASONS = {
    "CKV_AWS_18": "This is the server access log target bucket; logging it into itself would loop.",
    "CKV_AWS_51": (
        "BuildKit's registry layer cache moves its tag on every build; the images themselves live in the "
        "immutable image repository."
    ),
    "CKV_AWS_116": (
        "Invoked by an SQS event source, whose failed messages go to the queue's own dead-letter queue; "
        "a function DLQ only serves asynchronous invocations."
    ),
    "CKV_AWS_117": (
        "Calls only AWS APIs and reaches no resource inside a VPC; a VPC would add NAT gateways or "
        "endpoints without protecting anything."
    ),
    "CKV_AWS_120": (
        "Every request is a new prediction for its own rows: a cache would answer one caller with another's "
        "result."
    ),
    "CKV_AWS_173": (
        "The environment holds names, ARNs and settings, never secrets; Lambda encrypts it at rest with an "
        "AWS managed key."
    ),
}
METADATA_KEY = "checkov"


def skip_checks(construct: IConstruct, *check_ids: str) -> None:
    """Record that checkov may skip these checks on the construct's CloudFormation resource."""
    resource = construct.node.default_child if not isinstance(construct, CfnResource) else construct
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to annotate")
    existing = (resource.get_metadata(METADATA_KEY) or {}).get("skip", [])
    known = {entry["id"] for entry in existing}
    added = [{"id": check, "comment": REASONS[check]} for check in check_ids if check not in known]
    resource.add_metadata(METADATA_KEY, {"skip": [*existing, *added]})
