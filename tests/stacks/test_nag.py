"""cdk-nag runs on every synth, fails it on a finding, and honours only the anticipated acknowledgements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs

from stacks.nag import PATTERN_METADATA, acknowledge_findings, add_nag_checks
from tests.stacks.conftest import Synthesized

ROOT = Path(__file__).resolve().parents[2]


def violations(outdir: Path) -> dict[str, list[str]]:
    """rule id -> construct paths, from CDK's validation report."""
    report = json.loads((outdir / "validation-report.json").read_text())
    found: dict[str, list[str]] = {}
    for plugin in report["pluginReports"]:
        for violation in plugin["violations"]:
            paths = [r.get("constructPath", "") for r in violation["violatingConstructs"]]
            found.setdefault(violation["ruleName"], []).extend(paths)
    return found


def test_a_finding_fails_synth_and_unanticipated_wildcards_are_not_acknowledged(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Probe")
    # A queue without TLS enforcement or encryption: plain AwsSolutions findings.
    sqs.Queue(stack, "PlainQueue", encryption=sqs.QueueEncryption.UNENCRYPTED)
    role = iam.Role(stack, "ProbeRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["xray:PutTraceSegments"], resources=["*"]))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["arn:aws:s3:::bucket/x"]))
    # Only the Resource::* finding is anticipated; s3:* must still fail.
    acknowledge_findings(
        role, "AwsSolutions-IAM5", "xray has no resource-level permissions", [r"Resource::\*"]
    )
    add_nag_checks(app)

    with pytest.raises(RuntimeError, match="ValidationFailed") as error:
        app.synth()
    assert "AwsSolutions-SQS4" in str(error.value)

    found = violations(tmp_path)
    assert "AwsSolutions-SQS4" in found and "AwsSolutions-SQS2" in found
    assert found["AwsSolutions-SQS4"] == ["Probe/PlainQueue/Resource"]
    assert "AwsSolutions-IAM5[Action::s3:*]" in found
    assert "AwsSolutions-IAM5[Resource::*]" not in found


def acknowledgements(app: App) -> list[tuple[str, str, str]]:
    """(construct path, rule id, reason) for each acknowledgement written in stacks/.

    Rule-level ones come from `Validations...acknowledge`; IAM5 ones from the recorded finding patterns.
    The exact per-finding acknowledgements that FindingAcknowledger derives from those patterns during
    synth (ids with "[...]") are not separate decisions and are left out.
    """
    found = []
    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY

    def walk(node: Any) -> None:
        for entry in node.node.metadata:
            if entry.type == key:
                for rule, reason in entry.data.items():
                    rule_id = rule.split("::", 1)[-1]
                    if "[" not in rule_id:
                        found.append((node.node.path, rule_id, reason))
            if entry.type == PATTERN_METADATA:
                data = json.loads(entry.data)
                found.append((node.node.path, data["rule"], data["reason"]))
        for child in node.node.children:
            walk(child)

    walk(app)
    return found


def test_acknowledgements_are_few_narrow_and_explained(synthesized: Synthesized) -> None:
    every = acknowledgements(synthesized.app)
    # One entry per construct and rule: the README's table.
    assert sorted((path, rule) for path, rule, _ in every) == sorted(
        [
            ("TrainingData-dev/AccessLogBucket", "AwsSolutions-S1"),
            ("TrainingPipeline-dev/Training/SageMakerExecutionRole", "AwsSolutions-IAM5"),
            ("TrainingPipeline-dev/Training/StartTraining/Role", "AwsSolutions-IAM5"),
            ("TrainingPipeline-dev/RecordAndNotify/RecordStatus/Role", "AwsSolutions-IAM5"),
            ("TrainingPipeline-dev/DataUploads/DataTrigger/Role", "AwsSolutions-IAM5"),
            ("TrainingPipeline-dev/SourceAndBuild/ImageBuild", "AwsSolutions-IAM5"),
            ("TrainingPipeline-dev/SourceAndBuild/ImageBuild", "AwsSolutions-CB3"),
            ("TrainingPipeline-dev/Pipeline", "AwsSolutions-IAM5"),
            ("TrainingPipeline-dev/Training/StartTraining/Function", "AwsSolutions-L1"),
            ("TrainingPipeline-dev/RecordAndNotify/RecordStatus/Function", "AwsSolutions-L1"),
            ("TrainingPipeline-dev/DataUploads/DataTrigger/Function", "AwsSolutions-L1"),
        ]
    )
    for path, rule, reason in every:
        assert len(reason) > 40, (path, rule)
        assert path.count("/") >= 1, "no app- or stack-wide acknowledgements"


def test_app_py_reports_a_bad_context_value_in_one_line() -> None:
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"connection_arn": "not-an-arn"}),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "cdk.json context error: connection_arn: expected "
        "arn:aws:codeconnections:<region>:<12-digit account>:connection/<uuid> (got 'not-an-arn')"
    ]
    assert "Traceback" not in result.stderr
