"""ModelDeploy-<env>: the deploy pipeline, the REST APIs in front of the endpoints, the endpoints' role, the
rollback alarms, and least-privilege IAM (real-time staging from cdk.json; a serverless/API-key variant)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pipeline_common.endpoints import ERROR_MAP, alarm_names

from stacks.config import PROJECT_ROOT, ConfigError, PipelineConfig, read_json_context
from tests.stacks.conftest import Synthesized, one_of, resources_of
from tests.stacks.test_pipeline_stack import WILDCARD_ALLOWLIST, as_list

ACCOUNT_REGION = "us-east-1:111111111111"
PREFIX = "mlpipe-dev-"
STAGING, PRODUCTION = "mlpipe-dev-staging", "mlpipe-dev-production"


@pytest.fixture(scope="module")
def deploy(synthesized: Synthesized) -> dict[str, Any]:
    assert synthesized.deploy_json is not None
    return synthesized.deploy_json


def function(template: dict[str, Any], handler: str) -> dict[str, Any]:
    (props,) = [
        r["Properties"]
        for r in resources_of(template, "AWS::Lambda::Function").values()
        if r["Properties"]["Handler"] == handler
    ]
    return props


def statements(template: dict[str, Any], role_hint: str) -> list[dict[str, Any]]:
    found = []
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        if any(role_hint in r.get("Ref", "") for r in policy["Properties"]["Roles"]):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def actions_of(template: dict[str, Any], role_hint: str) -> set[str]:
    return {a for s in statements(template, role_hint) for a in as_list(s["Action"])}


# -- the deploy pipeline -----------------------------------------------------------------------------------
def test_deploy_pipeline_is_a_queued_v2_pipeline_started_by_start_deploy_only(deploy: dict[str, Any]) -> None:
    props = one_of(deploy, "AWS::CodePipeline::Pipeline")["Properties"]
    assert props["Name"] == "mlpipe-dev-deploy"
    assert props["PipelineType"] == "V2" and props["ExecutionMode"] == "QUEUED"
    assert props["Variables"] == [
        {"Name": "PACKAGE_ARN", "DefaultValue": "none", "Description": "the approved model package to deploy"}
    ]
    assert [s["Name"] for s in props["Stages"]] == [
        "Source",
        "Staging",
        "GoldenTest",
        "Approve",
        "Production",
    ]
    (source,) = props["Stages"][0]["Actions"]
    assert source["ActionTypeId"]["Provider"] == "S3"
    assert source["Configuration"]["S3ObjectKey"] == "deploy-requests/request.json"
    assert source["Configuration"]["PollForSourceChanges"] is False
    assert "Triggers" not in props


def test_each_deploy_action_passes_stage_package_and_execution(deploy: dict[str, Any]) -> None:
    props = one_of(deploy, "AWS::CodePipeline::Pipeline")["Properties"]
    actions = {s["Name"]: s["Actions"][0] for s in props["Stages"]}
    for stage, name in (("staging", "Staging"), ("production", "Production")):
        parameters = json.loads(actions[name]["Configuration"]["UserParameters"])
        assert parameters == {
            "stage": stage,
            "package_arn": "#{variables.PACKAGE_ARN}",
            "pipeline_execution_id": "#{codepipeline.PipelineExecutionId}",
        }
    golden = json.loads(actions["GoldenTest"]["Configuration"]["UserParameters"])
    assert golden == {
        "package_arn": "#{variables.PACKAGE_ARN}",
        "pipeline_execution_id": "#{codepipeline.PipelineExecutionId}",
    }
    assert actions["Approve"]["ActionTypeId"]["Category"] == "Approval"


def test_approval_rule_accepts_only_approvals_in_this_account_and_group(deploy: dict[str, Any]) -> None:
    (rule,) = [
        r["Properties"]
        for r in resources_of(deploy, "AWS::Events::Rule").values()
        if "Model Package State Change" in json.dumps(r["Properties"]["EventPattern"])
    ]
    pattern = rule["EventPattern"]
    assert pattern["account"] == [{"Ref": "AWS::AccountId"}]
    assert pattern["detail"] == {"ModelPackageGroupName": ["mlpipe-dev"], "ModelApprovalStatus": ["Approved"]}
    (target,) = rule["Targets"]
    assert "StartDeployFunction" in target["Arn"]["Fn::GetAtt"][0]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8 and "DeadLetterConfig" in target


def test_deployment_records_rule_listens_to_this_projects_endpoints_and_transform_jobs(
    deploy: dict[str, Any],
) -> None:
    (rule,) = [
        r["Properties"]
        for r in resources_of(deploy, "AWS::Events::Rule").values()
        if "Endpoint Deployment State Change" in json.dumps(r["Properties"]["EventPattern"])
    ]
    pattern = rule["EventPattern"]
    assert sorted(pattern["detail-type"]) == [
        "SageMaker Endpoint Deployment State Change",
        "SageMaker Transform Job State Change",
    ]
    assert pattern["detail"]["$or"] == [
        {"EndpointName": [{"prefix": PREFIX}]},
        {"TransformJobName": [{"prefix": PREFIX}]},
    ]
    assert pattern["account"] == [{"Ref": "AWS::AccountId"}]


# -- the APIs ----------------------------------------------------------------------------------------------
def methods(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in resources_of(template, "AWS::ApiGateway::Method").items()}


@pytest.mark.parametrize("api, endpoint", [("StagingApi", STAGING), ("ProductionApi", PRODUCTION)])
def test_api_is_a_direct_sagemaker_integration_with_iam_auth(
    deploy: dict[str, Any], api: str, endpoint: str
) -> None:
    (method,) = [m for lid, m in methods(deploy).items() if lid.startswith(api)]
    assert method["HttpMethod"] == "POST"
    assert method["AuthorizationType"] == "AWS_IAM"
    assert method["RequestParameters"] == {
        "method.request.header.Content-Type": True,
        "method.request.header.Accept": False,
    }
    assert "RequestValidatorId" in method
    integration = method["Integration"]
    assert integration["Type"] == "AWS" and integration["IntegrationHttpMethod"] == "POST"
    uri = json.dumps(integration["Uri"])
    assert f"runtime.sagemaker:path/endpoints/{endpoint}/invocations" in uri  # no Lambda in the path
    assert f"{api}IntegrationRole" in integration["Credentials"]["Fn::GetAtt"][0]
    assert integration["PassthroughBehavior"] == "WHEN_NO_TEMPLATES"
    responses = [
        (r.get("SelectionPattern"), int(r["StatusCode"])) for r in integration["IntegrationResponses"]
    ]
    assert responses == [(None, 200), *ERROR_MAP]


@pytest.mark.parametrize("api, endpoint", [("StagingApi", STAGING), ("ProductionApi", PRODUCTION)])
def test_integration_role_may_only_invoke_its_own_endpoint(
    deploy: dict[str, Any], api: str, endpoint: str
) -> None:
    (statement,) = statements(deploy, f"{api}IntegrationRole")
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert f":endpoint/{endpoint}" in json.dumps(statement["Resource"])
    assert "*" not in json.dumps(statement["Resource"])
    role = deploy["Resources"][
        next(lid for lid in resources_of(deploy, "AWS::IAM::Role") if lid.startswith(f"{api}IntegrationRole"))
    ]
    principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert principal["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert principal["Condition"] == {"StringEquals": {"aws:SourceAccount": "111111111111"}}


def test_api_stages_throttle_trace_and_log_to_an_encrypted_group(deploy: dict[str, Any]) -> None:
    stages = resources_of(deploy, "AWS::ApiGateway::Stage")
    assert len(stages) == 2
    for stage in stages.values():
        props = stage["Properties"]
        assert props["StageName"] == "v1"
        assert props["TracingEnabled"] is True
        (settings,) = props["MethodSettings"]
        assert settings["ThrottlingRateLimit"] == 50 and settings["ThrottlingBurstLimit"] == 100
        (log_group,) = [
            part["Ref"]
            for part in props["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1]
            if isinstance(part, dict)
        ]
        assert "KmsKeyId" in deploy["Resources"][log_group]["Properties"]
        assert "$context.identity.userArn" in props["AccessLogSetting"]["Format"]
    for api in resources_of(deploy, "AWS::ApiGateway::RestApi").values():
        assert api["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert not resources_of(deploy, "AWS::ApiGateway::ApiKey")  # iam auth: no keys


# -- serving -----------------------------------------------------------------------------------------------
def test_endpoint_execution_role_reads_models_writes_capture_only(deploy: dict[str, Any]) -> None:
    found = statements(deploy, "EndpointExecutionRole")
    puts = [s for s in found if "s3:PutObject" in as_list(s["Action"])]
    (put,) = puts
    assert "data-capture/*" in json.dumps(put["Resource"])
    gets = [s for s in found if "s3:GetObject" in as_list(s["Action"])]
    assert ["models/*" in json.dumps(s["Resource"]) for s in gets] == [True]
    assert "kms:Encrypt" in actions_of(deploy, "EndpointExecutionRole")  # data capture with the project key
    assert not any(a.startswith("sagemaker:") for a in actions_of(deploy, "EndpointExecutionRole"))


def test_rollback_alarms_watch_the_production_variant(deploy: dict[str, Any]) -> None:
    alarms = {
        r["Properties"]["AlarmName"]: r["Properties"]
        for r in resources_of(deploy, "AWS::CloudWatch::Alarm").values()
        if "AlarmName" in r["Properties"]
    }
    errors, latency = alarm_names(PRODUCTION)
    assert alarms[errors]["MetricName"] == "Invocation5XXErrors" and alarms[errors]["Threshold"] == 0
    assert alarms[latency]["MetricName"] == "ModelLatency"
    assert alarms[latency]["ExtendedStatistic"] == "p99"
    assert alarms[latency]["Threshold"] == 1_000_000  # 1000 ms in microseconds
    for alarm in (alarms[errors], alarms[latency]):
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
            "EndpointName": PRODUCTION,
            "VariantName": "AllTraffic",
        }
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "NotificationTopic" in json.dumps(alarm["AlarmActions"])


# -- IAM ---------------------------------------------------------------------------------------------------
def test_deploy_model_may_pass_only_the_endpoint_role_to_sagemaker(deploy: dict[str, Any]) -> None:
    passes = [s for s in statements(deploy, "") if "iam:PassRole" in as_list(s["Action"])]
    (statement,) = passes
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert "EndpointExecutionRole" in statement["Resource"]["Fn::GetAtt"][0]
    assert "DeployModelRole" in json.dumps(
        [
            p["Properties"]["Roles"]
            for p in resources_of(deploy, "AWS::IAM::Policy").values()
            if statement in p["Properties"]["PolicyDocument"]["Statement"]
        ]
    )


def test_sagemaker_actions_are_scoped_to_this_projects_names(deploy: dict[str, Any]) -> None:
    for s in statements(deploy, ""):
        sagemaker = [a for a in as_list(s["Action"]) if a.startswith("sagemaker:")]
        if not sagemaker:
            continue
        for resource in as_list(s["Resource"]):
            text = json.dumps(resource)
            assert re.search(
                rf"(model|endpoint-config|endpoint|transform-job)/{PREFIX}(\*|staging\"|production\")|model-package(-group)?/mlpipe-dev|ModelPackageGroup",
                text,
            ), (sagemaker, text)


def test_no_wildcard_resources_except_apis_without_resource_permissions(deploy: dict[str, Any]) -> None:
    # Application Auto Scaling has no resource ARNs for scalable targets (condition-scoped instead).
    allowed = WILDCARD_ALLOWLIST | {
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:DescribeScalableTargets",
    }
    offending = []
    for s in statements(deploy, ""):
        if "*" in as_list(s.get("Resource", [])):
            offending += [a for a in as_list(s["Action"]) if a not in allowed]
            if any(a.startswith("application-autoscaling:Register") for a in as_list(s["Action"])):
                assert (
                    s["Condition"]["StringEquals"]["application-autoscaling:service-namespace"] == "sagemaker"
                )
    assert offending == []


def test_golden_test_may_call_only_the_staging_api(deploy: dict[str, Any]) -> None:
    invokes = [
        s for s in statements(deploy, "GoldenTestRole") if "execute-api:Invoke" in as_list(s["Action"])
    ]
    (statement,) = invokes
    text = json.dumps(statement["Resource"])
    assert "StagingApi" in text and "ProductionApi" not in text and "/v1/POST/invocations" in text


def test_golden_test_reads_only_the_jobs_output_archives(deploy: dict[str, Any]) -> None:
    """The golden set is golden.json in each training job's output.tar.gz: golden-test may read that key
    pattern of the artifacts bucket, and no other object."""
    reads = [s for s in statements(deploy, "GoldenTestRole") if "s3:GetObject" in as_list(s["Action"])]
    (statement,) = reads
    assert as_list(statement["Action"]) == ["s3:GetObject"]
    text = json.dumps(statement["Resource"])
    assert "/models/mlpipe-dev-*/output/output.tar.gz" in text and "golden.json" not in text


DEPLOY_ENV = {
    "start_deploy.handler.lambda_handler": {"REQUEST_BUCKET", "REQUEST_KEY"},
    "deploy_model.handler.lambda_handler": {
        "KMS_KEY_ARN",
        "ENDPOINT_ROLE_ARN",
        "DEPLOY_CONFIG",
        "CAPTURE_URI",
        "DATA_BUCKET",
        "MODEL_BUCKET",
    },
    "golden_test.handler.lambda_handler": {
        "STAGING_API_URL",
        "DEPLOY_CONFIG",
    },
}


@pytest.mark.parametrize("handler", sorted(DEPLOY_ENV))
def test_deploy_functions_environment(deploy: dict[str, Any], handler: str) -> None:
    variables = function(deploy, handler)["Environment"]["Variables"]
    assert DEPLOY_ENV[handler] <= set(variables)
    assert variables["DEPLOY_PIPELINE_NAME"] == "mlpipe-dev-deploy"
    if "DEPLOY_CONFIG" in variables:
        config = json.loads(variables["DEPLOY_CONFIG"])
        assert config["staging"]["instance_type"] == "ml.m5.large"
        assert config["production"]["instance_count"] == 2
        assert config["guardrail"]["type"] == "canary"


# -- the serverless / API-key variant -------------------------------------------------------------------------
VARIANT_CONTEXT = {
    "env_name": "srv",
    "staging_endpoint": json.dumps({"serverless": {"memory_mb": 2048, "max_concurrency": 5}}),
    "api_auth": "api_key",
    "production_manual_approval": "false",
    "guardrail": json.dumps({"type": "linear", "size_percent": 50, "wait_seconds": 120}),
    "batch_transform": json.dumps(
        {"input_prefix": "batch/input/", "output_prefix": "batch/output/", "instance_type": "ml.m5.xlarge"}
    ),
}


@pytest.fixture(scope="module")
def serverless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app with a serverless staging endpoint, API keys, no manual approval and batch transform."""
    from stacks.application import build_app

    app = build_app(
        VARIANT_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out.srv")), read_local_file=False
    )
    yield app.synth().get_stack_by_name("ModelDeploy-srv").template


def test_serverless_staging_synthesizes_with_its_settings(serverless: dict[str, Any]) -> None:
    config = json.loads(
        function(serverless, "deploy_model.handler.lambda_handler")["Environment"]["Variables"][
            "DEPLOY_CONFIG"
        ]
    )
    assert config["staging"]["serverless_memory_mb"] == 2048
    assert config["staging"]["serverless_max_concurrency"] == 5
    assert config["staging"]["instance_type"] is None
    assert config["production"]["instance_type"] == "ml.m5.large"  # production stays real-time
    assert config["guardrail"] == {
        "type": "linear",
        "size_percent": 50,
        "wait_seconds": 120,
        "max_5xx": 0,
        "p99_latency_ms": 1000.0,
    }
    props = one_of(serverless, "AWS::CodePipeline::Pipeline")["Properties"]
    assert [s["Name"] for s in props["Stages"]] == ["Source", "Staging", "GoldenTest", "Production"]


def test_api_key_auth_requires_a_key_with_a_throttled_usage_plan(serverless: dict[str, Any]) -> None:
    for method in methods(serverless).values():
        assert method["AuthorizationType"] == "NONE" and method["ApiKeyRequired"] is True
    assert len(resources_of(serverless, "AWS::ApiGateway::ApiKey")) == 2
    for plan in resources_of(serverless, "AWS::ApiGateway::UsagePlan").values():
        assert plan["Properties"]["Throttle"] == {"RateLimit": 50, "BurstLimit": 100}


def test_batch_transform_grants_only_its_prefixes(serverless: dict[str, Any]) -> None:
    found = statements(serverless, "EndpointExecutionRole")
    text = json.dumps(found)
    assert "batch/input/*" in text and "batch/output/*" in text
    assert "sagemaker:CreateTransformJob" in actions_of(serverless, "DeployModelRole")


def test_serverless_production_and_a_canary_below_one_instance_are_refused() -> None:
    base = read_json_context(PROJECT_ROOT / "cdk.json")
    with pytest.raises(ConfigError, match=r"^production_endpoint\.serverless: expected real-time instances"):
        PipelineConfig.from_mapping(
            {**base, "production_endpoint": {"serverless": {"memory_mb": 2048, "max_concurrency": 5}}}
        )
    with pytest.raises(
        ConfigError, match=r"^guardrail\.size_percent: expected at least 50 with 2 production instances"
    ):
        PipelineConfig.from_mapping(
            {**base, "guardrail": {"type": "canary", "size_percent": 10, "wait_seconds": 60}}
        )


def test_every_deploy_spec_is_one_function_of_the_deploy_stack_with_its_module(
    deploy: dict[str, Any],
) -> None:
    from stacks import functions

    handlers = sorted(
        r["Properties"]["Handler"] for r in resources_of(deploy, "AWS::Lambda::Function").values()
    )
    assert handlers == sorted(spec.handler for spec in functions.DEPLOY_ALL)
    for spec in functions.DEPLOY_ALL:
        module = spec.handler.rsplit(".", 1)[0].replace(".", "/")
        assert (PROJECT_ROOT / "lambdas" / f"{module}.py").is_file(), spec.handler
