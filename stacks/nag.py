"""cdk-nag wiring: the AwsSolutions pack on every synth, and narrowly scoped acknowledgements.

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
from cdk_nag import AwsSolutionsChecks
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


def logical_id(name: str) -> str:
    """Pattern for the logical id of a construct named `name`, at any depth (CDK prefixes its scopes' ids)."""
    return rf"[A-Za-z0-9]*{name}[0-9A-F]{{8}}"


def add_nag_checks(app: App) -> None:
    """Any unacknowledged AwsSolutions finding fails synthesis (CDK validation plugins are blocking)."""
    Validations.of(app).add_plugins(FindingAcknowledger(app), AwsSolutionsChecks(app, verbose=True))


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one rule on one construct (and its children), with the reason recorded in metadata."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


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


@jsii.implements(IPolicyValidationPlugin)
class FindingAcknowledger:
    """Runs cdk-nag once to list granular findings and acknowledges those matching a recorded pattern."""

    def __init__(self, app: App) -> None:
        self._app = app

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
        report = AwsSolutionsChecks(None, verbose=False).validate_scope(self._app)
        for violation in report.violations:
            match = _FINDING.match(violation.rule_name)
            if match is None:
                continue
            for resource in violation.violating_resources:
                node = _find(self._app, resource.construct_path or "")
                while node is not None:
                    if self._acknowledge(node, violation.rule_name, match["rule"], match["finding"]):
                        break
                    node = node.node.scope
        return PolicyValidationPluginReport(success=True, violations=[])

    @staticmethod
    def _acknowledge(node: IConstruct, finding_id: str, rule: str, finding: str) -> bool:
        for entry in _patterns(node):
            if entry["rule"] == rule and any(re.fullmatch(p, finding) for p in entry["findings"]):  # type: ignore[attr-defined]
                Validations.of(node).acknowledge(Acknowledgment(id=finding_id, reason=str(entry["reason"])))
                return True
        return False
