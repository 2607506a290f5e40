"""One pipeline Lambda function and everything it owns, so a new function is a few lines.

A function gets: the shared code asset and Powertools layer, its own role (logs scoped to its own log
group, no managed policies), a KMS-encrypted log group with retention, X-Ray tracing, a reserved
concurrency, optionally a dead-letter queue for asynchronous invocations with an alarm to the topic, and its
cdk-nag acknowledgements and checkov skips. Its construct id and handler come from `stacks.functions`, the
one place they are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.checkov_skips import REASONS as CHECKOV_REASONS
from stacks.checkov_skips import skip_checks
from stacks.config import PROJECT_ROOT
from stacks.constructs.logs import log_group
from stacks.constructs.policies import depend_on_policy_only
from stacks.constructs.queues import AlarmedDeadLetterQueue
from stacks.functions import FunctionSpec
from stacks.nag import (
    ANY_RESOURCE,
    INLINE_POLICY_REASON,
    acknowledge,
    acknowledge_compliance,
    acknowledge_findings,
)

if TYPE_CHECKING:
    from stacks.config import PipelineConfig
    from stacks.data_resources import DataResources

LAMBDA_ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]
RUNTIME = lambda_.Runtime.PYTHON_3_12  # matches the python312 Powertools layer
MEMORY_MB = 256
TRACING_WILDCARD = (
    ANY_RESOURCE,
    "xray:PutTraceSegments/PutTelemetryRecords have no resource-level permissions",
)


@dataclass(frozen=True)
class FunctionDefaults:
    """What every pipeline function shares."""

    code: lambda_.Code
    layer: lambda_.ILayerVersion
    key: kms.IKey  # encrypts the log group and the dead-letter queue
    alarm_topic: sns.ITopic
    log_retention_days: int
    pipeline_name: str
    environment: Mapping[str, str]  # variables every function gets (README: "Lambda environment")

    @classmethod
    def for_stack(
        cls, stack: Construct, config: PipelineConfig, data: DataResources, pipeline_name: str
    ) -> FunctionDefaults:
        """One stack's functions: the lambdas/ asset, the Powertools layer, the data stack's key and topic, and
        `pipeline_name`, the pipeline they act in (the training or the deploy pipeline)."""
        return cls(
            code=lambda_.Code.from_asset(str(PROJECT_ROOT / "lambdas"), exclude=LAMBDA_ASSET_EXCLUDES),
            layer=lambda_.LayerVersion.from_layer_version_arn(
                stack, "PowertoolsLayer", config.powertools_layer_arn
            ),
            key=data.key,
            alarm_topic=data.topic,
            log_retention_days=config.log_retention_days,
            pipeline_name=pipeline_name,
            environment={
                "PROJECT_NAME": config.project_name,
                "ENV_NAME": config.env_name,
                "PIPELINE_NAME": pipeline_name,
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
        )


class PipelineFunction(Construct):
    """A Lambda function of the pipeline, with its own role, log group and (optionally) DLQ.

    `reserved_concurrency` is required: each function states how many copies may run at once.
    `wildcards` are the IAM5 findings this function's role is expected to carry, as (finding pattern,
    why) pairs (see stacks/nag.py); the tracing one is always included. Anything else still fails synth.
    """

    def __init__(
        self,
        scope: Construct,
        spec: FunctionSpec,
        *,
        defaults: FunctionDefaults,
        timeout: Duration,
        reserved_concurrency: int,
        environment: Mapping[str, str] | None = None,
        statements: Iterable[iam.PolicyStatement] = (),
        dead_letter: str | None = None,
        wildcards: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(scope, spec.construct_id)
        self.spec = spec
        self.log_group = log_group(self, "Logs", retention_days=defaults.log_retention_days, key=defaults.key)
        # Own role with logs scoped to its own group, instead of AWSLambdaBasicExecutionRole (logs:* on *).
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        for statement in statements:
            self.role.add_to_principal_policy(statement)
        # For asynchronous invocations: what fails even after Lambda's retries lands here, and alarms.
        self.dead_letter_queue = (
            AlarmedDeadLetterQueue(
                self,
                "Dlq",
                key=defaults.key,
                alarm_topic=defaults.alarm_topic,
                pipeline_name=defaults.pipeline_name,
                what=dead_letter,
            )
            if dead_letter is not None
            else None
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=spec.handler,
            code=defaults.code,
            role=self.role,
            log_group=self.log_group,
            layers=[defaults.layer],
            tracing=lambda_.Tracing.ACTIVE,
            timeout=timeout,
            memory_size=MEMORY_MB,
            # A ceiling per function, so one cannot take the account's concurrency from the others; each
            # concern sizes it so its own work never starves (see the constants next to each function).
            reserved_concurrent_executions=reserved_concurrency,
            dead_letter_queue=self.dead_letter_queue,
            environment={
                **defaults.environment,
                "POWERTOOLS_SERVICE_NAME": f"{defaults.pipeline_name}-{spec.construct_id}",
                **(environment or {}),
            },
        )
        depend_on_policy_only(self.function, self.role)
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12 to match the public Powertools layer (python312) and the tested runtime.",
        )
        # Outside a VPC, and no secrets in the environment: the same decisions for checkov and cdk-nag's packs.
        skip_checks(self.function, "CKV_AWS_117", "CKV_AWS_173")
        acknowledge_compliance(self.function, "LambdaInsideVPC", CHECKOV_REASONS["CKV_AWS_117"])
        acknowledge_compliance(self.role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        patterns, reasons = _merge([TRACING_WILDCARD, *wildcards])
        acknowledge_findings(
            self.role,
            "AwsSolutions-IAM5",
            f"Wildcards only where the scope is a prefix or the API has no resource ARN: {'; '.join(reasons)}.",
            patterns,
        )


def _merge(wildcards: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Unique patterns and unique reasons, in order."""
    patterns = list(dict.fromkeys(pattern for pattern, _ in wildcards))
    reasons = list(dict.fromkeys(reason for _, reason in wildcards))
    return patterns, reasons
