"""Deploy (`--deploy`): the approved package to a staging endpoint, its golden test through the local API,
and production behind the guardrail, with the deploy stack's handlers and settings.

The settings come from the synthesized `ModelDeploy-<env>` template (DEPLOY_CONFIG, names), so local and
cloud cannot drift; what has no local counterpart (the REST API's URL, the endpoints' role) is the local
one. The handlers run in this process with the local SageMaker hosting stand-in (`LocalEndpoints`, the real
image's `serve` per endpoint config), the local API in front of each endpoint, and the emulator's audit
table, topic and buckets. Unlike the training handlers, they run with the harness's identity: the deploy
stack's roles are not created in the emulator yet, so IAM is checked statically only (tests/stacks).

The golden set (rows of the validation channel and the predictions for them) is recorded here from the
packaged model, as packaging would record it, and stored next to the model (`golden.json`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

from deploy_model import deploying
from golden_test import testing
from pipeline_common import aws, endpoints
from pipeline_common.model_package import APPROVED
from pipeline_common.pipeline_action import CONTINUE, SUCCEEDED
from start_deploy import starting

from mlpipe.local import containers
from mlpipe.local.api import LocalInferenceApi
from mlpipe.local.codepipeline import LocalCodePipeline
from mlpipe.local.console import StageFailed, note
from mlpipe.local.deployment import StackTemplate
from mlpipe.local.endpoints import LocalAlarmHistory, LocalAutoscaling, LocalEndpoints, StandInClient
from mlpipe.local.serving import LocalServing
from mlpipe.local.stages.actions import show_new_emails
from mlpipe.local.stages.approval import show_lineage
from mlpipe.local.stages.record import read_record
from mlpipe.local.stages.serve import download_model, feature_rows
from mlpipe.local.state import RunState
from stacks.functions import DEPLOY_MODEL, GOLDEN_TEST

LOCAL_ENDPOINT_ROLE = "arn:aws:iam::123456789012:role/local-endpoint-execution-role"
MAX_ACTIONS = 200  # continuations of one deploy action before the stage gives up


def function_environment(state: RunState, handler: str) -> dict[str, str]:
    """A deploy stack function's environment from the synthesized template, resolved against the emulator
    (what only exists in AWS, e.g. the REST API's URL, is left out: the caller sets the local one)."""
    data, _ = state.need("templates")
    env = data.name.removeprefix("TrainingData-")
    template = StackTemplate.load(state.work / "cdk.out", f"ModelDeploy-{env}")
    (function,) = [
        r["Properties"]
        for r in template.body["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    ]
    resolved: dict[str, str] = {}
    for name, value in function["Environment"]["Variables"].items():
        with contextlib.suppress(Exception):
            resolved[name] = str(state.deployment.resolve(template, value))
    resolved["ENDPOINT_ROLE_ARN"] = LOCAL_ENDPOINT_ROLE
    return resolved


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def record_golden_set(state: RunState, bucket: str, model_prefix: str, rows: int) -> str:
    """golden.json next to the model: validation rows and the packaged model's predictions for them."""
    validation = sorted((state.options.data / "validation").glob("*.csv"))
    features = feature_rows(validation[0], rows) if validation else []
    if not features:
        raise StageFailed("no validation rows for the golden set")
    model_dir = state.work / "golden" / "model"
    if not model_dir.exists():
        download_model(state.client("s3"), state.need("model_artifact"), model_dir)
    predictions = []
    with containers.serve(state.need("image").tag, model_dir) as base:
        for row in features:
            status, answer, _, _ = _post(base, f"{row}\n".encode())
            if status != 200:
                raise StageFailed(f"the packaged model answered {status} for a golden row: {answer[:200]!r}")
            predictions.append(float(answer.decode().split()[0].split(",")[0]))
    key = endpoints.golden_key(model_prefix, state.trained_job())
    body = {"content_type": "text/csv", "rows": features, "predictions": predictions}
    state.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())
    return f"s3://{bucket}/{key}"


def _post(base: str, body: bytes) -> tuple[int, bytes, str, float]:
    from mlpipe.local.api import _post as post

    return post(base, body, "text/csv", "text/csv")


def run(state: RunState) -> None:
    if not state.options.deploy:
        note("skipped: run with --deploy (and --approve) to deploy the approved package")
        return
    cloud, arn = state.need("cloud"), state.need("package_arn")
    if state.record.get("approval_status") != APPROVED:
        raise StageFailed(
            "--deploy deploys approved packages only: the package is not Approved (use --approve)"
        )
    variables = function_environment(state, DEPLOY_MODEL.handler)
    golden_variables = function_environment(state, GOLDEN_TEST.handler)
    config = json.loads(variables["DEPLOY_CONFIG"])
    model_prefix, bucket = golden_variables["MODEL_PREFIX"], golden_variables["MODEL_BUCKET"]
    golden = record_golden_set(state, bucket, model_prefix, int(config["golden_test"]["rows"]))
    note(f"golden set recorded from the packaged model: {golden}")

    registry = state.need("registry")
    local: LocalEndpoints

    def model_of_config(name: str) -> tuple[str, str]:
        model = local.models[local.configs[name]["ProductionVariants"][0]["ModelName"]]
        package = registry.packages[model["Containers"][0]["ModelPackageName"]]
        return state.need("image").tag, package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]

    serving = LocalServing(state.work, model_of_config, state.client("s3"))
    state.cleanup.callback(serving.close)
    apis: dict[str, LocalInferenceApi] = {}

    def alarm_check(endpoint: str, name: str) -> str | None:
        guardrail = config["guardrail"]
        api = apis.get(endpoint)
        return api.alarm_check(name, 0.0, guardrail["max_5xx"], guardrail["p99_latency_ms"]) if api else None

    local = LocalEndpoints(
        state.region, serving=serving, alarm_check=alarm_check, on_event=state.events.append
    )
    caller = cloud.user("local-api-caller", ("execute-api:Invoke",))
    urls = {}
    for stage in endpoints.STAGES:
        name = endpoints.endpoint_name(variables["PROJECT_NAME"], variables["ENV_NAME"], stage)
        apis[name] = LocalInferenceApi(
            name,
            backends=serving.backend,
            weights=lambda name=name: serving.weights(name),
            secret_of={caller.access_key_id: caller.secret_access_key}.get,
            may_invoke=lambda key: key == caller.access_key_id,
            region=state.region,
        )
        urls[stage] = state.cleanup.enter_context(apis[name].running())
    golden_variables["STAGING_API_URL"] = urls[endpoints.STAGING]
    pipeline = LocalCodePipeline(variables["DEPLOY_PIPELINE_NAME"], {"PACKAGE_ARN": "none"})
    clients = {
        "sagemaker": StandInClient("sagemaker", registry, local),
        "codepipeline": StandInClient("codepipeline", pipeline),
        "cloudwatch": StandInClient("cloudwatch", LocalAlarmHistory(local)),
        "application-autoscaling": StandInClient("application-autoscaling", LocalAutoscaling()),
        **{service: state.client(service) for service in ("s3", "dynamodb", "sns")},
    }
    with aws.use_clients(clients), environment(variables):
        started = time.perf_counter()
        event = {
            "id": f"local-approval-{arn}",
            "detail-type": starting.DETAIL_TYPE,
            "detail": {
                "ModelPackageArn": arn,
                "ModelPackageGroupName": variables["MODEL_PACKAGE_GROUP_NAME"],
                "ModelApprovalStatus": APPROVED,
            },
        }
        execution = starting.start(
            starting.parse_event(event),
            variables["MODEL_PACKAGE_GROUP_NAME"],
            variables["DEPLOY_PIPELINE_NAME"],
            bucket,
            endpoints.DEPLOY_REQUEST_KEY,
        )["execution_id"]
        _action(pipeline, execution, "staging", arn)
        note(
            f"staging answers at {urls[endpoints.STAGING]} ({time.perf_counter() - started:.1f} s after the approval)"
        )
        with environment({**golden_variables, **caller.environment()}):
            job = pipeline.new_job(execution, "GoldenTest", {"package_arn": arn})["CodePipeline.job"]
            result = testing.handle(job["id"], {"package_arn": arn})
        note(result.message)
        if result.outcome != SUCCEEDED:
            raise StageFailed(result.message)
        if config["production_manual_approval"]:
            note("production promotion approved by --approve (in AWS: the pipeline's manual approval action)")
        _action(pipeline, execution, "production", arn)
        note(f"production answers at {urls[endpoints.PRODUCTION]}")
    state.record = read_record(state, state.trained_job())
    for key in sorted(k for k in state.record if k.startswith(("deployment:", "golden_test:"))):
        entry = state.record[key]
        note(f"{key}: {entry.get('status', 'passed' if entry.get('passed') else 'failed')}")
    show_new_emails(state)
    show_lineage(state)
    (state.work / "endpoints.json").write_text(json.dumps({"apis": urls, "caller": caller.arn}, indent=2))


def _action(pipeline: LocalCodePipeline, execution: str, stage: str, arn: str) -> None:
    parameters = {"stage": stage, "package_arn": arn, "pipeline_execution_id": execution}
    for _ in range(MAX_ACTIONS):
        job = pipeline.new_job(execution, "DeployModel", parameters)["CodePipeline.job"]
        result = deploying.handle(job["id"], parameters, job["data"].get("continuationToken"))
        if result.outcome == CONTINUE:
            continue
        if result.outcome != SUCCEEDED:
            raise StageFailed(f"deploy to {stage}: {result.message}")
        note(result.message)
        return
    raise StageFailed(f"deploy to {stage} did not finish after {MAX_ACTIONS} actions")
