"""cdk-nag runs on every synth, fails it on a finding, and honours only the anticipated acknowledgements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sqs as sqs

from stacks import application, nag
from stacks.config import COMPLIANCE_PACKS
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


ALL_PACKS = ("nist-800-53-r5", "hipaa", "pci-dss-3.2.1")
PACK_NAMES = ["NIST.800.53.R5", "HIPAA.Security", "PCI.DSS.321"]


def test_config_and_nag_know_the_same_packs() -> None:
    assert COMPLIANCE_PACKS == ALL_PACKS
    assert tuple(nag.COMPLIANCE_PACKS) == ALL_PACKS == tuple(nag.PACK_RULE_PREFIX)
    assert all(set(packs) <= set(ALL_PACKS) for packs in nag.RULE_PACKS.values())


def test_compliance_packs_fail_synth_and_honour_only_recorded_granular_findings(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Probe")
    logs.LogGroup(stack, "PlainLogs")  # not KMS-encrypted: a plain finding in all three packs
    # RDSLoggingEnabled is granular (one finding per missing log export): only NIST's audit one is anticipated.
    db = rds.CfnDBInstance(
        stack, "Db", engine="mysql", db_instance_class="db.t3.micro", allocated_storage="20"
    )
    acknowledge_findings(
        db, "NIST.800.53.R5-RDSLoggingEnabled", "probe: audit logs go elsewhere", [r"LogExport::audit"]
    )
    add_nag_checks(app, ALL_PACKS)

    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()

    found = violations(tmp_path)
    for pack in PACK_NAMES:
        assert found[f"{pack}-CloudWatchLogGroupEncrypted"] == ["Probe/PlainLogs/Resource"]
        assert f"{pack}-RDSLoggingEnabled[LogExport::error]" in found
    assert "NIST.800.53.R5-RDSLoggingEnabled[LogExport::audit]" not in found
    assert "HIPAA.Security-RDSLoggingEnabled[LogExport::audit]" in found


@dataclass
class AllPacks:
    app: App
    enabled: list[str]  # what build_app handed to add_nag_checks


@pytest.fixture(scope="module")
def with_all_packs(tmp_path_factory: pytest.TempPathFactory) -> AllPacks:
    """The app with every opt-in pack: the module's one extra synth. It raises on any unacknowledged finding."""
    enabled: list[str] = []

    def recording(app: App, compliance_packs: Iterable[str] = ()) -> None:
        enabled.extend(compliance_packs)
        add_nag_checks(app, compliance_packs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(application, "add_nag_checks", recording)
        app = application.build_app(
            {"compliance_packs": ",".join(ALL_PACKS)},
            outdir=str(tmp_path_factory.mktemp("cdk.out.packs")),
            read_local_file=False,
        )
    app.synth()
    return AllPacks(app, enabled)


def test_every_pack_runs_and_leaves_no_unacknowledged_finding(with_all_packs: AllPacks) -> None:
    # Synth above raised on nothing; the probe test above shows the same add_nag_checks fails on a finding.
    assert with_all_packs.enabled == list(ALL_PACKS)


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


AWS_SOLUTIONS = [
    ("TrainingData-dev/AccessLogBucket", "AwsSolutions-S1"),
    ("TrainingPipeline-dev/Training/SageMakerExecutionRole", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/Training/StartTraining/Role", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/RecordAndNotify/RecordStatus/Role", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/DataUploads/DataTrigger/Role", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/QualityGate/EvaluateModel/Role", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/ModelRegistry/RegisterModel/Role", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/ModelRegistry/RecordApproval/Role", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/SourceAndBuild/ImageBuild", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/SourceAndBuild/ImageBuild", "AwsSolutions-CB3"),
    ("TrainingPipeline-dev/Pipeline", "AwsSolutions-IAM5"),
    ("TrainingPipeline-dev/Training/StartTraining/Function", "AwsSolutions-L1"),
    ("TrainingPipeline-dev/RecordAndNotify/RecordStatus/Function", "AwsSolutions-L1"),
    ("TrainingPipeline-dev/DataUploads/DataTrigger/Function", "AwsSolutions-L1"),
    ("TrainingPipeline-dev/QualityGate/EvaluateModel/Function", "AwsSolutions-L1"),
    ("TrainingPipeline-dev/ModelRegistry/RegisterModel/Function", "AwsSolutions-L1"),
    ("TrainingPipeline-dev/ModelRegistry/RecordApproval/Function", "AwsSolutions-L1"),
]
# The pipeline's functions, by construct path (each has its role, function and acknowledgements).
FUNCTIONS = (
    "Training/StartTraining",
    "RecordAndNotify/RecordStatus",
    "DataUploads/DataTrigger",
    "QualityGate/EvaluateModel",
    "ModelRegistry/RegisterModel",
    "ModelRegistry/RecordApproval",
)
NIST, HIPAA, PCI = PACK_NAMES
# The deploy stack (ModelDeploy-dev): its functions, its roles and its two REST APIs.
DEPLOY_FUNCTIONS = (
    "Deployment/StartDeploy",
    "Deployment/DeployModel",
    "Deployment/GoldenTest",
    "DeploymentRecords/RecordDeployment",
)
DEPLOY_APIS = ("StagingApi", "ProductionApi")
DEPLOY_AWS_SOLUTIONS = [
    *((f"ModelDeploy-dev/{function}/Role", "AwsSolutions-IAM5") for function in DEPLOY_FUNCTIONS),
    *((f"ModelDeploy-dev/{function}/Function", "AwsSolutions-L1") for function in DEPLOY_FUNCTIONS),
    ("ModelDeploy-dev/Serving/EndpointExecutionRole", "AwsSolutions-IAM5"),
    ("ModelDeploy-dev/Deployment/Pipeline", "AwsSolutions-IAM5"),
    # IAM authorization (not Cognito), no web ACL, access logs instead of execution logs.
    *(
        (f"ModelDeploy-dev/{api}/Api", rule)
        for api in DEPLOY_APIS
        for rule in ("AwsSolutions-COG4", "AwsSolutions-APIG3", "AwsSolutions-APIG6")
    ),
]
DEPLOY_COMPLIANCE = [
    *(
        (f"ModelDeploy-dev/{function}/Function", "LambdaInsideVPC", (NIST, HIPAA, PCI))
        for function in DEPLOY_FUNCTIONS
    ),
    *(
        (f"ModelDeploy-dev/{role}", "IAMNoInlinePolicy", (NIST, HIPAA, PCI))
        for role in (
            *(f"{function}/Role" for function in DEPLOY_FUNCTIONS),
            "Serving/EndpointExecutionRole",
            "Deployment/Pipeline",
            *(f"{api}/IntegrationRole" for api in DEPLOY_APIS),
        )
    ),
    *(
        (f"ModelDeploy-dev/{api}/Api", rule, packs)
        for api in DEPLOY_APIS
        for rule, packs in (
            ("APIGWAssociatedWithWAF", (NIST, PCI)),
            ("APIGWCacheEnabledAndEncrypted", (NIST, HIPAA, PCI)),
            ("APIGWExecutionLoggingEnabled", (NIST, HIPAA, PCI)),
            ("APIGWSSLEnabled", (NIST, HIPAA, PCI)),
        )
    ),
]
# The opt-in packs' rules: (construct, rule, the packs that have the rule). The README's second table.
COMPLIANCE = [
    ("TrainingData-dev/AccessLogBucket", "S3DefaultEncryptionKMS", (NIST, HIPAA, PCI)),
    *(
        (f"TrainingData-dev/{bucket}", "S3BucketReplicationEnabled", (NIST, HIPAA, PCI))
        for bucket in ("AccessLogBucket", "DataBucket", "ArtifactsBucket")
    ),
    ("TrainingData-dev/AuditTable", "DynamoDBInBackupPlan", (NIST, HIPAA)),
    ("TrainingPipeline-dev/RecordAndNotify/IdempotencyTable", "DynamoDBInBackupPlan", (NIST, HIPAA)),
    *(
        (f"TrainingPipeline-dev/{function}/Function", "LambdaInsideVPC", (NIST, HIPAA, PCI))
        for function in FUNCTIONS
    ),
    ("TrainingPipeline-dev/DataUploads/DataTrigger/Function", "LambdaDLQ", (NIST, HIPAA)),
    *(
        (f"TrainingPipeline-dev/{role}", "IAMNoInlinePolicy", (NIST, HIPAA, PCI))
        for role in (
            *(f"{function}/Role" for function in FUNCTIONS),
            "Training/SageMakerExecutionRole",
            "SourceAndBuild/ImageBuild",
            "Pipeline",  # the pipeline's role and its three action roles
        )
    ),
    ("TrainingPipeline-dev/SourceAndBuild/ImageBuild", "CodeBuildProjectSourceRepoUrl", (HIPAA, PCI)),
]


def test_acknowledgements_are_few_narrow_and_explained(synthesized: Synthesized) -> None:
    every = acknowledgements(synthesized.app)
    # One entry per construct and rule: the README's tables.
    expected = (
        AWS_SOLUTIONS
        + DEPLOY_AWS_SOLUTIONS
        + [(path, f"{pack}-{rule}") for path, rule, packs in COMPLIANCE + DEPLOY_COMPLIANCE for pack in packs]
    )
    assert sorted((path, rule) for path, rule, _ in every) == sorted(expected)
    # 82 for the data and training pipeline stacks (unchanged), 74 for the deploy stack.
    assert len(every) == 82 + 74
    for path, rule, reason in every:
        assert len(reason) > 40, (path, rule)
        assert path.count("/") >= 1, "no app- or stack-wide acknowledgements"
    # A rule acknowledged on one construct gives the same reason in every pack.
    reasons: dict[tuple[str, str], set[str]] = {}
    for path, rule, reason in every:
        reasons.setdefault((path, rule.split("-", 1)[-1]), set()).add(reason)
    assert all(len(r) == 1 for r in reasons.values())


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
