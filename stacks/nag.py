"""cdk-nag wiring: the AwsSolutions pack on every synth, opt-in compliance packs, narrow acknowledgements.

`compliance_packs` in config adds NIST 800-53 rev 5, HIPAA Security and PCI DSS 3.2.1 the same way;
`acknowledge_compliance` acknowledges one of their rules in each enabled-or-not pack that has it, so the
acknowledgements are the same whichever packs run.

Plain rules are acknowledged with `Validations.of(construct).acknowledge(...)`, which cdk-nag 3 reads
from construct metadata. Granular rules (IAM5) report one finding per wildcard, e.g.
`AwsSolutions-IAM5[Resource::TrainingData-dev:ExportsOutput...Arn.../datasets/*]`, and cdk-nag only
accepts acknowledgements of the exact finding id. Those ids contain cross-stack export names and
logical ids that only exist after CDK's prepare phase, so `acknowledge_findings` records *patterns*
(a regex per expected wildcard) on the construct, and `FindingAcknowledger`, a validation plugin that
runs just before cdk-nag, turns each matching finding into an exact `Validations...acknowledge`.
A wildcard nobody anticipated matches no pattern and still fails synth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import jsii
from aws_cdk import (
    Acknowledgment,
    App,
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    Validations,
)
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NagPack, NIST80053R5Checks, PCIDSS321Checks
from constructs import IConstruct

PATTERN_METADATA = "pipeline:nag-finding-acknowledgements"
_FINDING = re.compile(r"^(?P<rule>[^\[]+)\[(?P<finding>.*)\]$")

# IAM5 finding patterns shared by several roles.
ANY_RESOURCE = r"Resource::\*"  # only for APIs without resource-level permissions (tests hold the allowlist)
ARTIFACT_OBJECTS = r"Resource::.*ArtifactsBucket[0-9A-F]*Arn[0-9A-F]*/\*"
ARTIFACT_GRANT_ACTIONS = (
    r"Action::s3:(GetObject|GetBucket|List|DeleteObject|Abort)\*",
    r"Action::kms:(GenerateDataKey|ReEncrypt)\*",
)


def objects_under(prefix: str) -> str:
    """IAM5 finding pattern for objects under one key prefix of a (cross-stack) bucket."""
    return rf"Resource::.+/{re.escape(prefix)}\*"


def model_packages_finding(group: str) -> tuple[str, str]:
    """IAM5 finding pattern, and its reason, for the versions of the project's model package group."""
    return (
        rf"Resource::arn:aws:sagemaker:[^:]+:\d{{12}}:model-package/{re.escape(group)}/\*",
        f"model-package/{group}/* (the versions of this project's model package group)",
    )


def logical_id(name: str) -> str:
    """Pattern for the logical id of a construct named `name`, at any depth (CDK prefixes its scopes' ids)."""
    return rf"[A-Za-z0-9]*{name}[0-9A-F]{{8}}"


# The opt-in packs by their `compliance_packs` names (stacks.config.COMPLIANCE_PACKS), and rule id prefixes.
COMPLIANCE_PACKS: dict[str, type[NagPack]] = {
    "nist-800-53-r5": NIST80053R5Checks,
    "hipaa": HIPAASecurityChecks,
    "pci-dss-3.2.1": PCIDSS321Checks,
}
PACK_RULE_PREFIX = {
    "nist-800-53-r5": "NIST.800.53.R5",
    "hipaa": "HIPAA.Security",
    "pci-dss-3.2.1": "PCI.DSS.321",
}
_ALL_PACKS = tuple(COMPLIANCE_PACKS)
INLINE_POLICY_REASON = (
    "Each role's statements are that role's own policy (CDK's DefaultPolicy), scoped to its resources; a "
    "customer managed policy would add a reusable, attachable object without narrowing any permission."
)
# The opt-in packs that contain each rule this project acknowledges (cdk-nag 3.0.2's pack definitions).
RULE_PACKS: dict[str, tuple[str, ...]] = {
    "APIGWAssociatedWithWAF": ("nist-800-53-r5", "pci-dss-3.2.1"),
    "APIGWCacheEnabledAndEncrypted": _ALL_PACKS,
    "APIGWExecutionLoggingEnabled": _ALL_PACKS,
    "APIGWSSLEnabled": _ALL_PACKS,
    "CodeBuildProjectSourceRepoUrl": ("hipaa", "pci-dss-3.2.1"),
    "DynamoDBInBackupPlan": ("nist-800-53-r5", "hipaa"),
    "IAMNoInlinePolicy": _ALL_PACKS,
    "LambdaDLQ": ("nist-800-53-r5", "hipaa"),
    "LambdaInsideVPC": _ALL_PACKS,
    "S3BucketReplicationEnabled": _ALL_PACKS,
    "S3DefaultEncryptionKMS": _ALL_PACKS,
}


def add_nag_checks(app: App, compliance_packs: Iterable[str] = ()) -> None:
    """Any unacknowledged finding of AwsSolutions or an enabled pack fails synthesis (plugins are blocking)."""
    packs = [AwsSolutionsChecks] + [COMPLIANCE_PACKS[name] for name in compliance_packs]
    Validations.of(app).add_plugins(
        FindingAcknowledger(app, packs), *(pack(app, verbose=True) for pack in packs)
    )


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one rule on one construct (and its children), with the reason recorded in metadata."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_compliance(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one opt-in pack rule (e.g. "LambdaInsideVPC") in every pack that has it."""
    for pack in RULE_PACKS[rule]:
        acknowledge(construct, f"{PACK_RULE_PREFIX[pack]}-{rule}", reason)


def acknowledge_findings(construct: IConstruct, rule_id: str, reason: str, findings: Iterable[str]) -> None:
    """Acknowledge the findings of a granular rule under `construct` whose text matches one of `findings`.

    Each pattern is a regex matched against the whole finding, e.g. r"Resource::\\*" or
    r"Resource::.*/datasets/\\*".
    """
    construct.node.add_metadata(
        PATTERN_METADATA, json.dumps({"rule": rule_id, "reason": reason, "findings": list(findings)})
    )


def _patterns(node: IConstruct) -> list[dict[str, object]]:
    return [json.loads(entry.data) for entry in node.node.metadata if entry.type == PATTERN_METADATA]


def _find(root: IConstruct, path: str) -> IConstruct | None:
    node: IConstruct | None = root
    for part in path.split("/"):
        node = node.node.try_find_child(part) if node is not None else None
    return node


def _all_patterns(root: IConstruct) -> list[dict[str, object]]:
    return [entry for node in root.node.find_all() for entry in _patterns(node)]


@jsii.implements(IPolicyValidationPlugin)
class FindingAcknowledger:
    """Runs the packs once to list granular findings and acknowledges those matching a recorded pattern.

    A pack runs here only if some pattern names one of its rules: the others have nothing to acknowledge,
    and each extra run costs a full pass over the app.
    """

    def __init__(self, app: App, packs: Iterable[type[NagPack]] = (AwsSolutionsChecks,)) -> None:
        self._app = app
        self._packs = list(packs)

    @property
    def name(self) -> str:
        return "nag-finding-acknowledgements"

    @property
    def rule_ids(self) -> list[str] | None:
        return None

    @property
    def version(self) -> str | None:
        return None

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        rules = {str(entry["rule"]) for entry in _all_patterns(self._app)}
        for pack in self._packs:
            checks = pack(None, verbose=False)
            if not any(rule.startswith(f"{checks.read_pack_name}-") for rule in rules):
                continue
            for violation in checks.validate_scope(self._app).violations:
                self._acknowledge_violation(violation.rule_name, violation.violating_resources)
        return PolicyValidationPluginReport(success=True, violations=[])

    def _acknowledge_violation(self, rule_name: str, resources: Iterable[object]) -> None:
        match = _FINDING.match(rule_name)
        if match is None:
            return
        for resource in resources:
            node = _find(self._app, getattr(resource, "construct_path", None) or "")
            while node is not None:
                if self._acknowledge(node, rule_name, match["rule"], match["finding"]):
                    break
                node = node.node.scope

    @staticmethod
    def _acknowledge(node: IConstruct, finding_id: str, rule: str, finding: str) -> bool:
        for entry in _patterns(node):
            if entry["rule"] == rule and any(re.fullmatch(p, finding) for p in entry["findings"]):  # type: ignore[attr-defined]
                Validations.of(node).acknowledge(Acknowledgment(id=finding_id, reason=str(entry["reason"])))
                return True
        return False
