"""A REST API in front of one stage's SageMaker endpoint, with no Lambda in the request path.

`POST /<stage>/invocations` is an AWS service integration on `runtime.sagemaker`
(`endpoints/<endpoint>/invocations`): API Gateway signs the call with its own role, which may call only
`sagemaker:InvokeEndpoint` on this endpoint. The body and `Content-Type`/`Accept` pass through unchanged;
SageMaker's errors map to the API's statuses by `pipeline_common.endpoints.ERROR_MAP` (the local API in
`mlpipe/local/api.py` reads the same table).

Callers are authorized with IAM (SigV4, `execute-api:Invoke`) by default, or with an API key and a usage
plan (`api_auth: api_key`). The stage throttles, writes JSON access logs to a KMS-encrypted log group and
traces with X-Ray. REST APIs answer only HTTPS (TLS 1.2 on the execute-api endpoint).
"""

from __future__ import annotations

import json

from aws_cdk import Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct
from pipeline_common.endpoints import API_PATH, API_STAGE, ERROR_MAP

from stacks.checkov_skips import skip_checks
from stacks.config import DeployConfig
from stacks.constructs.logs import log_group
from stacks.nag import INLINE_POLICY_REASON, acknowledge, acknowledge_compliance

# What a log line holds: who called, what, and how SageMaker answered (no bodies: they are the payload).
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "caller": "$context.identity.caller",
    "user": "$context.identity.userArn",
    "apiKeyId": "$context.identity.apiKeyId",
    "ip": "$context.identity.sourceIp",
    "time": "$context.requestTime",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "length": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationStatus": "$context.integration.status",
    "integrationLatencyMs": "$context.integration.latency",
    "error": "$context.error.message",
}
WAF_REASON = (
    "Callers are authenticated (IAM SigV4 or an API key with a usage plan) and throttled per stage; a web ACL "
    "is a per-account choice of managed rule groups and cost left to the deployer (its body inspection stops "
    "at 64 KB, so it cannot enforce the payload limit either)."
)
EXECUTION_LOGS_REASON = (
    "JSON access logs of every request go to a KMS-encrypted log group; execution logs need the region-wide API "
    "Gateway CloudWatch role (an account setting this stack must not own) and would log request payloads."
)


class InferenceApi(Construct):
    """The REST API of one stage (staging or production)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        endpoint_name: str,
        deploy: DeployConfig,
        key: kms.IKey,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.endpoint_arn = stack.format_arn(
            service="sagemaker", resource="endpoint", resource_name=endpoint_name
        )
        self.access_logs = log_group(self, "AccessLogs", retention_days=log_retention_days, key=key)
        # API Gateway's integration role: this endpoint's InvokeEndpoint and nothing else.
        self.role = iam.Role(
            self,
            "IntegrationRole",
            description=f"API Gateway: InvokeEndpoint on {endpoint_name} only",
            assumed_by=iam.ServicePrincipal(
                "apigateway.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[self.endpoint_arn])
        )
        acknowledge_compliance(self.role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)

        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=endpoint_name,
            description=f"{stage} predictions: InvokeEndpoint on {endpoint_name}",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE,
                throttling_rate_limit=deploy.throttle_rate,
                throttling_burst_limit=deploy.throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
                tracing_enabled=True,
                metrics_enabled=True,
            ),
        )
        integration = apigw.AwsIntegration(
            service="runtime.sagemaker",
            path=f"endpoints/{endpoint_name}/invocations",
            integration_http_method="POST",
            options=apigw.IntegrationOptions(
                credentials_role=self.role,
                passthrough_behavior=apigw.PassthroughBehavior.WHEN_NO_TEMPLATES,
                request_parameters={
                    "integration.request.header.Content-Type": "method.request.header.Content-Type",
                    "integration.request.header.Accept": "method.request.header.Accept",
                },
                integration_responses=[
                    apigw.IntegrationResponse(status_code="200"),
                    *(
                        apigw.IntegrationResponse(selection_pattern=pattern, status_code=str(status))
                        for pattern, status in ERROR_MAP
                    ),
                ],
            ),
        )
        # Content-Type is required; the body has no model (CSV, JSON or Parquet pass through as they are), so
        # body validation checks nothing and the container validates the rows.
        validator = apigw.RequestValidator(
            self,
            "RequireContentType",
            rest_api=self.api,
            validate_request_parameters=True,
            validate_request_body=True,
        )
        api_key = deploy.api_auth == "api_key"
        self.method = self.api.root.add_resource(API_PATH).add_method(
            "POST",
            integration,
            authorization_type=apigw.AuthorizationType.NONE if api_key else apigw.AuthorizationType.IAM,
            api_key_required=api_key,
            request_validator=validator,
            request_parameters={
                "method.request.header.Content-Type": True,
                "method.request.header.Accept": False,
            },
            method_responses=[
                apigw.MethodResponse(status_code=str(status)) for status in (200, *(s for _, s in ERROR_MAP))
            ],
        )
        if api_key:
            plan = self.api.add_usage_plan(
                "UsagePlan",
                name=f"{endpoint_name}-callers",
                throttle=apigw.ThrottleSettings(
                    rate_limit=deploy.throttle_rate, burst_limit=deploy.throttle_burst
                ),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            plan.add_api_key(self.api.add_api_key("ApiKey", api_key_name=f"{endpoint_name}-key"))
            acknowledge(
                self.api,
                "AwsSolutions-APIG4",
                "api_auth is api_key: every request needs the API key of the usage plan, which throttles it.",
            )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Callers are AWS principals (IAM SigV4 authorization) or API-key holders, not Cognito users.",
        )
        skip_checks(self.api.deployment_stage, "CKV_AWS_120")
        acknowledge(self.api, "AwsSolutions-APIG3", WAF_REASON)
        acknowledge(self.api, "AwsSolutions-APIG6", EXECUTION_LOGS_REASON)
        acknowledge_compliance(self.api, "APIGWAssociatedWithWAF", WAF_REASON)
        acknowledge_compliance(self.api, "APIGWExecutionLoggingEnabled", EXECUTION_LOGS_REASON)
        acknowledge_compliance(
            self.api,
            "APIGWCacheEnabledAndEncrypted",
            "Every request is a new prediction for its own rows: a cache would answer one caller with another's "
            "result, so there is no cache (and nothing cached to encrypt).",
        )
        acknowledge_compliance(
            self.api,
            "APIGWSSLEnabled",
            "A client certificate authenticates API Gateway to an HTTP backend; this integration is an AWS service "
            "call to runtime.sagemaker over HTTPS, signed with SigV4 by the integration role.",
        )

    @property
    def url(self) -> str:
        return f"{self.api.url}{API_PATH}"

    def invoke_arn(self) -> str:
        """The execute-api ARN of POST /invocations on the deployed stage (for an IAM caller's policy)."""
        return self.api.arn_for_execute_api("POST", f"/{API_PATH}", API_STAGE)
