"""The pipeline stack's building blocks, each on a bare Stack: what every function and queue carries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from stacks import functions
from stacks.constructs.pipeline_function import FunctionDefaults, PipelineFunction
from stacks.constructs.queues import AlarmedDeadLetterQueue, EncryptedQueue
from stacks.functions import FunctionSpec
from stacks.nag import PATTERN_METADATA
from tests.stacks.conftest import Synthesized, resources_of

ROOT = Path(__file__).resolve().parents[2]
LAYER = "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:27"
# A function the pipeline does not have yet: adding one is a spec and a few lines.
EVALUATE = FunctionSpec("Evaluate", "evaluate.handler.lambda_handler")


class Probe:
    """A bare stack with two pipeline functions (one with a DLQ) and two queues, synthesized once."""

    def __init__(self) -> None:
        app = App()
        stack = Stack(app, "Probe", env={"account": "111111111111", "region": "us-east-1"})
        key = kms.Key(stack, "Key")
        topic = sns.Topic(stack, "Topic")
        defaults = FunctionDefaults(
            code=lambda_.Code.from_inline("def lambda_handler(event, context):\n    return None\n"),
            layer=lambda_.LayerVersion.from_layer_version_arn(stack, "Layer", LAYER),
            key=key,
            alarm_topic=topic,
            log_retention_days=14,
            pipeline_name="probe-dev",
            environment={"PIPELINE_NAME": "probe-dev"},
        )
        self.with_dlq = PipelineFunction(
            stack,
            EVALUATE,
            defaults=defaults,
            timeout=Duration.seconds(20),
            reserved_concurrency=3,
            dead_letter="an evaluate invocation",
            environment={"EXTRA": "1"},
            statements=[iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn])],
        )
        self.without_dlq = PipelineFunction(
            stack,
            functions.DATA_TRIGGER,
            defaults=defaults,
            timeout=Duration.seconds(60),
            reserved_concurrency=1,
        )
        EncryptedQueue(stack, "PlainQueue", key=key)
        AlarmedDeadLetterQueue(
            stack, "ProbeDlq", key=key, alarm_topic=topic, pipeline_name="probe-dev", what="a probe"
        )
        self.stack, self.key, self.topic = stack, key, topic
        self.template = Template.from_stack(stack).to_json()

    def lid(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)  # type: ignore[no-any-return]

    def props(self, construct: Any) -> dict[str, Any]:
        return self.template["Resources"][self.lid(construct)]["Properties"]  # type: ignore[no-any-return]

    def policy_statements(self, role: iam.Role) -> list[dict[str, Any]]:
        role_lid = self.lid(role)
        return [
            s
            for p in resources_of(self.template, "AWS::IAM::Policy").values()
            if {"Ref": role_lid} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe()


def test_function_runs_the_specs_handler_with_tracing_layer_and_shared_environment(probe: Probe) -> None:
    props = probe.props(probe.with_dlq.function)
    assert props["Handler"] == "evaluate.handler.lambda_handler"
    assert props["Runtime"] == "python3.12"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Layers"] == [LAYER]
    assert props["Timeout"] == 20
    assert props["ReservedConcurrentExecutions"] == 3
    assert props["Environment"]["Variables"] == {
        "PIPELINE_NAME": "probe-dev",
        "POWERTOOLS_SERVICE_NAME": "probe-dev-Evaluate",
        "EXTRA": "1",
    }
    assert probe.with_dlq.node.id == "Evaluate"  # the construct id comes from the spec


def test_function_has_its_own_role_with_logs_scoped_to_its_own_log_group(probe: Probe) -> None:
    for pf in (probe.with_dlq, probe.without_dlq):
        props = probe.props(pf.function)
        assert props["Role"] == {"Fn::GetAtt": [probe.lid(pf.role), "Arn"]}
        role = probe.props(pf.role)
        assert "ManagedPolicyArns" not in role
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "lambda.amazonaws.com"
        }
        logs = [s for s in probe.policy_statements(pf.role) if "logs:PutLogEvents" in s["Action"]]
        assert logs == [
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [probe.lid(pf.log_group), "Arn"]},
            }
        ]
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": probe.lid(pf.log_group)}
        assert probe.props(pf.log_group)["RetentionInDays"] == 14
        assert probe.props(pf.log_group)["KmsKeyId"] == {"Fn::GetAtt": [probe.lid(probe.key), "Arn"]}
    assert probe.lid(probe.with_dlq.role) != probe.lid(probe.without_dlq.role)


def test_extra_statements_go_to_the_functions_own_role(probe: Probe) -> None:
    actions = [s["Action"] for s in probe.policy_statements(probe.with_dlq.role)]
    assert "sns:Publish" in actions
    assert "sns:Publish" not in [s["Action"] for s in probe.policy_statements(probe.without_dlq.role)]


def test_dead_letter_queue_only_when_asked_and_it_alarms_to_the_topic(probe: Probe) -> None:
    dlq = probe.with_dlq.dead_letter_queue
    assert dlq is not None and probe.without_dlq.dead_letter_queue is None
    assert probe.props(probe.with_dlq.function)["DeadLetterConfig"] == {
        "TargetArn": {"Fn::GetAtt": [probe.lid(dlq), "Arn"]}
    }
    assert "DeadLetterConfig" not in probe.props(probe.without_dlq.function)
    alarm = probe.props(dlq.alarm)
    assert alarm["AlarmActions"] == [{"Ref": probe.lid(probe.topic)}]  # type: ignore[arg-type]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [probe.lid(dlq), "QueueName"]}}
    ]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert "an evaluate invocation" in alarm["AlarmDescription"]


def test_queues_are_encrypted_with_the_key_and_tls_only(probe: Probe) -> None:
    queues = resources_of(probe.template, "AWS::SQS::Queue")
    assert len(queues) == 3  # the function's DLQ, PlainQueue, ProbeDlq
    key_lid = probe.lid(probe.key)
    for lid, queue in queues.items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_lid, "Arn"]}, lid
    tls_only = {
        q["Ref"]
        for p in resources_of(probe.template, "AWS::SQS::QueuePolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for q in p["Properties"]["Queues"]
    }
    assert tls_only == set(queues)
    dead_letter = [q for lid, q in queues.items() if "Dlq" in lid]
    assert {q["Properties"]["MessageRetentionPeriod"] for q in dead_letter} == {14 * 24 * 3600}


def test_function_acknowledges_only_its_runtime_and_anticipated_wildcards(probe: Probe) -> None:
    acknowledged = [
        rule.split("::", 1)[-1]
        for m in probe.with_dlq.function.node.metadata
        if m.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for rule in m.data
    ]
    assert sorted(acknowledged) == [
        "AwsSolutions-L1",
        "HIPAA.Security-LambdaInsideVPC",
        "NIST.800.53.R5-LambdaInsideVPC",
        "PCI.DSS.321-LambdaInsideVPC",
    ]
    (pattern,) = [json.loads(m.data) for m in probe.with_dlq.role.node.metadata if m.type == PATTERN_METADATA]
    assert pattern["rule"] == "AwsSolutions-IAM5"
    assert pattern["findings"] == [r"Resource::\*"]  # X-Ray only: nothing else anticipated
    assert "xray:PutTraceSegments" in pattern["reason"]


def test_functions_module_is_the_one_place_and_imports_no_cdk() -> None:
    ids = [spec.construct_id for spec in functions.ALL]
    handlers = [spec.handler for spec in functions.ALL]
    assert len(set(ids)) == len(ids) and len(set(handlers)) == len(handlers)
    for handler in handlers:
        module = handler.rsplit(".", 1)[0].replace(".", "/")
        assert (ROOT / "lambdas" / f"{module}.py").is_file(), handler
    # The local run reads stacks.functions; it must not pay for loading the CDK.
    check = "import sys, stacks.functions; assert not any(m.startswith(('aws_cdk', 'constructs', 'jsii')) for m in sys.modules)"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True, timeout=60)


def test_every_spec_is_one_function_in_the_pipeline_stack(synthesized: Synthesized) -> None:
    handlers = sorted(
        r["Properties"]["Handler"]
        for r in resources_of(synthesized.pipeline_json, "AWS::Lambda::Function").values()
    )
    assert handlers == sorted(spec.handler for spec in functions.ALL)
