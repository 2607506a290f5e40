"""The deploy stack's handlers run under their own synthesized roles with IAM enforced, as the training
handlers do: the whole deploy (approval → start-deploy → deploy-model to staging → golden-test through the
staging API → deploy-model to production → record-deployment from the state changes) succeeds with the
template's roles, and with one statement removed from a role the handler fails with AccessDenied naming
the action, as the same template would fail in AWS. moto checks DynamoDB, SNS and S3; the gateway checks
the stand-ins' SageMaker, CodePipeline, CloudWatch and Application Auto Scaling; the local API checks
`execute-api:Invoke` as API Gateway's IAM authorization does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pipeline_common import endpoints

from mlpipe.local.deployment import LocalDeployment, StackTemplate
from stacks.functions import (
    DEPLOY_ALL,
    DEPLOY_MODEL,
    GOLDEN_TEST,
    RECORD_DEPLOYMENT,
    START_DEPLOY,
    FunctionSpec,
)
from tests.conftest import IAM_TYPES, REGION, Synthesized
from tests.lambda_fixtures import DeployLambdas


def deploy_through(d: DeployLambdas, arn: str) -> dict[str, Any]:
    """The deploy pipeline for one approval; what each step returned or reported."""
    started = d.invoke(START_DEPLOY, d.approval_event(arn))
    execution = started["execution_id"]
    steps: dict[str, Any] = {"start": started}
    for name, spec, parameters in (
        ("staging", DEPLOY_MODEL, {"stage": endpoints.STAGING}),
        ("golden", GOLDEN_TEST, {}),
        ("production", DEPLOY_MODEL, {"stage": endpoints.PRODUCTION}),
    ):
        result = d.run_action(
            spec, execution, {**parameters, "package_arn": arn, "pipeline_execution_id": execution}
        )
        steps[name] = result
        if result is None or not result.succeeded:
            break
    return steps


def test_the_whole_deploy_runs_under_the_templates_roles(deploy_lambdas: DeployLambdas) -> None:
    d = deploy_lambdas
    arn = d.package("mlpipe-test-job-1")
    before = len(d.cloud.gateway.calls)
    steps = deploy_through(d, arn)
    callers = {  # AssumeRole is Lambda's own call (the harness's), for each function's role
        d.cloud.permissions.principal(c.access_key)
        for c in d.cloud.gateway.calls[before:]
        if c.service != "sts"
    }
    assert steps["start"]["outcome"] == "started"
    assert d.codepipeline.executions[steps["start"]["execution_id"]].variables["PACKAGE_ARN"] == arn
    for name in ("staging", "golden", "production"):
        assert steps[name].succeeded, (name, steps[name])
    record = d.record("mlpipe-test-job-1")
    assert record["golden_test:v1"]["passed"] is True
    assert {k for k in record if k.startswith("deployment:")}, record
    # Every call was made as one of the four functions' roles from the template, none as the harness.
    roles = {d.function(spec).role_arn.rsplit("/", 1)[1] for spec in DEPLOY_ALL}
    assert {caller.split("/")[1] for caller in callers} == roles, callers


def without_statements(
    template: dict[str, Any], handler: str, action: str
) -> tuple[dict[str, Any], set[str]]:
    """A copy of the deploy template without the statements that grant `action` to `handler`'s role, and
    every action those statements granted."""
    body = copy.deepcopy(template)
    resources = body["Resources"]
    (function,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    ]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    removed: set[str] = set()
    for policy in (r for r in resources.values() if r["Type"] == "AWS::IAM::Policy"):
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        kept = []
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            listed = statement["Action"]
            actions = {listed} if isinstance(listed, str) else set(listed)
            if action in actions:
                removed |= actions
            else:
                kept.append(statement)
        policy["Properties"]["PolicyDocument"]["Statement"] = kept
    return body, removed


def use_roles_without(
    d: DeployLambdas, synthesized: Synthesized, spec: FunctionSpec, action: str
) -> set[str]:
    """`spec` runs under its role as synthesized without the statements granting `action` (a stack of
    another name, so the session's roles stay whole); the actions the removed statements granted."""
    body, removed = without_statements(synthesized.deploy_json or {}, spec.handler, action)
    assert action in removed, f"no statement of {spec.handler}'s role grants {action}"
    name = "ModelDeploy-" + action.replace(":", "-").lower()[:24]
    deployment = LocalDeployment(
        StackTemplate("TrainingData-dev", synthesized.data_json),
        StackTemplate("TrainingPipeline-dev", synthesized.pipeline_json),
        REGION,
        StackTemplate(name, body),
    )
    deployment.create(d.cloud.session, d.cloud.moto_url, only=IAM_TYPES)
    function = deployment.function(spec.handler)
    d.cloud.deployment.register_role(function.role_arn, list(deployment.role_actions(function.role_arn)))
    d.functions[spec.handler] = function
    return removed


@pytest.mark.parametrize(
    ("spec", "action"),
    [
        (START_DEPLOY, "codepipeline:StartPipelineExecution"),  # the gateway, for the CodePipeline stand-in
        (DEPLOY_MODEL, "sagemaker:CreateModel"),  # the gateway, for the SageMaker hosting stand-in
        (DEPLOY_MODEL, "iam:PassRole"),  # the gateway: CreateModel hands SageMaker the endpoints' role
        (GOLDEN_TEST, "execute-api:Invoke"),  # the local API, as API Gateway's IAM authorization
        (RECORD_DEPLOYMENT, "dynamodb:UpdateItem"),  # moto
    ],
    ids=lambda value: getattr(value, "construct_id", value),
)
def test_a_missing_statement_in_a_deploy_role_fails_with_access_denied(
    deploy_lambdas: DeployLambdas, synthesized: Synthesized, spec: FunctionSpec, action: str
) -> None:
    d = deploy_lambdas
    removed = use_roles_without(d, synthesized, spec, action)
    arn = d.package("mlpipe-test-job-1")
    try:
        steps = deploy_through(d, arn)
    except Exception as error:  # an EventBridge-invoked handler raises, for Lambda's retries and DLQ
        failure = str(error)
    else:
        failed = [s for name, s in steps.items() if name != "start" and s is not None and not s.succeeded]
        assert failed, f"the deploy succeeded without {action}: {steps}"
        failure = str(failed[0].failure_message)
    if spec is GOLDEN_TEST:  # API Gateway answers an unauthorized caller 403; the test fails naming it
        assert "403" in failure, failure
    else:
        assert "AccessDenied" in failure or "not authorized" in failure, failure
        # The first call the removed statement allowed is the one denied (GetItem before UpdateItem, say).
        assert any(f"perform: {a}" in failure for a in removed), (removed, failure)
