"""What deploy-model does for one CodePipeline job: the approved package on one stage's endpoint.

Steps, each idempotent through deterministic names (`pipeline_common.endpoints`), so any retry or
continuation repeats them safely:
1. the package: DescribeModelPackage (this group's, Approved; its training job names the audit record);
2. the model `<project>-<env>-v<version>` from the package (CreateModel with ModelPackageName), once;
3. the endpoint config `<endpoint>-v<version>`: real-time instances (KMS volume key, data capture with the
   key) or serverless, once;
4. the endpoint: CreateEndpoint if there is none; UpdateEndpoint if it serves another config: in
   production with the guardrail (`DeploymentConfig`: blue/green, canary or linear, auto-rollback on the two
   alarms), in staging all at once; nothing if it already serves this config;
5. while the endpoint is Creating/Updating the action stays open (continuation token: the config it waits
   for and when the update was requested); InService on this config succeeds (after target-tracking
   autoscaling is registered for real-time variants); InService on another config after our update
   means SageMaker rolled it back: the action fails naming the alarm that fired; Failed fails it.

Guarantees (asynchronous invocations delivered at least once, any AWS call failing or applied while its
caller sees an error, a crash between any two calls):
- at most one model, one endpoint config and one endpoint per name (a second create finds the first);
- an UpdateEndpoint is requested only while the endpoint is InService on another config, and a retry that
  finds its own update in progress waits for it instead of updating again (also botocore's own retry of an
  UpdateEndpoint SageMaker applied while the answer was lost: "Cannot update in-progress endpoint" is
  that update, waited for, not a failure). Known gap: the fact that the
  update was requested lives in the continuation token; if an invocation dies after UpdateEndpoint and
  before reporting its token, and SageMaker then rolls that update back, the next invocation sees "InService
  on another config" and requests the update again (a second canary of the same bad model, rolled back by
  the same alarms) instead of failing at once;
- exactly one result per job (`pipeline_action.put_result`); a transient error keeps the action open;
- the deployment's audit entry only moves forward, and each outcome is emailed once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline_common import audit, aws, deployments, endpoints, pipeline_action
from pipeline_common.errors import BadInputError
from pipeline_common.model_package import APPROVED
from pipeline_common.pipeline_action import CONTINUE, FAILED, SUCCEEDED, ActionResult

logger = logging.getLogger(__name__)

WAITING = ("Creating", "Updating", "SystemUpdating", "RollingBack")
IN_PROGRESS = "Cannot update in-progress endpoint"  # SageMaker's ValidationException for a second update
ALREADY_EXISTS = "Cannot create already existing"


@dataclass(frozen=True)
class Target:
    stage: str
    package: deployments.Package
    endpoint: str
    model: str
    config: str


def target(settings: deployments.DeploySettings, stage: str, package_arn: str) -> Target:
    if stage not in endpoints.STAGES:
        raise BadInputError(f"stage must be one of {', '.join(endpoints.STAGES)} (got {stage!r})")
    package = deployments.Package.describe(package_arn, settings.model_package_group)
    if package.status != APPROVED:
        raise BadInputError(f"{package_arn} is {package.status}, not Approved: only approved packages deploy")
    endpoint = endpoints.endpoint_name(settings.project_name, settings.env_name, stage)
    return Target(
        stage,
        package,
        endpoint,
        endpoints.model_name(settings.project_name, settings.env_name, package.version),
        endpoints.endpoint_config_name(endpoint, package.version),
    )


def _spec(settings: deployments.DeploySettings, stage: str) -> dict[str, Any]:
    return dict(settings.deploy[stage])


def endpoint_config_request(settings: deployments.DeploySettings, t: Target) -> dict[str, Any]:
    """CreateEndpointConfig's request for the stage's spec."""
    spec = _spec(settings, t.stage)
    variant: dict[str, Any] = {"VariantName": endpoints.VARIANT, "ModelName": t.model}
    request: dict[str, Any] = {"EndpointConfigName": t.config, "ProductionVariants": [variant]}
    if spec.get("serverless_memory_mb"):
        # Serverless: no instances, so no volume key and no data capture here (see the README).
        variant["ServerlessConfig"] = {
            "MemorySizeInMB": spec["serverless_memory_mb"],
            "MaxConcurrency": spec["serverless_max_concurrency"],
        }
        return request
    variant.update(
        {
            "InstanceType": spec["instance_type"],
            "InitialInstanceCount": spec["instance_count"],
            "InitialVariantWeight": 1.0,
        }
    )
    request["KmsKeyId"] = settings.kms_key_arn
    if settings.deploy.get("data_capture"):
        request["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": f"{settings.capture_uri}{t.endpoint}",
            "KmsKeyId": settings.kms_key_arn,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        }
    return request


def deployment_config(settings: deployments.DeploySettings, endpoint: str) -> dict[str, Any]:
    """Production's DeploymentConfig: blue/green with the guardrail's traffic shifting and auto-rollback."""
    guardrail = settings.deploy["guardrail"]
    size = {"Type": "CAPACITY_PERCENT", "Value": guardrail["size_percent"]}
    routing: dict[str, Any] = {"WaitIntervalInSeconds": guardrail["wait_seconds"]}
    if guardrail["type"] == "canary":
        routing.update({"Type": "CANARY", "CanarySize": size})
    else:
        routing.update({"Type": "LINEAR", "LinearStepSize": size})
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": guardrail["wait_seconds"],
        },
        "AutoRollbackConfiguration": {
            "Alarms": [{"AlarmName": name} for name in endpoints.alarm_names(endpoint)]
        },
    }


def _create(call: Any, **request: Any) -> None:
    """A create whose name may exist from an earlier attempt: that one is the same (names are deterministic)."""
    try:
        call(**request)
    except Exception as error:
        if ALREADY_EXISTS not in str(error):
            raise


def _describe_endpoint(name: str) -> dict[str, Any] | None:
    try:
        return dict(aws.client("sagemaker").describe_endpoint(EndpointName=name))
    except Exception as error:
        if aws.error_code(error) == "ValidationException" and "Could not find endpoint" in str(error):
            return None
        raise


def _register_autoscaling(settings: deployments.DeploySettings, t: Target) -> None:
    spec = _spec(settings, t.stage)
    if spec.get("serverless_memory_mb"):
        return
    resource = f"endpoint/{t.endpoint}/variant/{endpoints.VARIANT}"
    scaling = aws.client("application-autoscaling")
    scaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=endpoints.SCALABLE_DIMENSION,
        MinCapacity=spec["min_capacity"],
        MaxCapacity=spec["max_capacity"],
    )
    scaling.put_scaling_policy(
        PolicyName=f"{t.endpoint}-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=endpoints.SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(spec["target_invocations_per_instance"]),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
        },
    )


def _deregister_autoscaling(t: Target) -> None:
    """Blue/green updates replace the fleet; the old scalable target would fight the new fleet's counts."""
    try:
        aws.client("application-autoscaling").deregister_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/{t.endpoint}/variant/{endpoints.VARIANT}",
            ScalableDimension=endpoints.SCALABLE_DIMENSION,
        )
    except Exception as error:
        if aws.error_code(error) != "ObjectNotFoundException":
            raise


def transform_request(settings: deployments.DeploySettings, t: Target, execution: str) -> dict[str, Any]:
    """CreateTransformJob for the newly deployed model over the batch input prefix (SageMaker's split:
    lines packed into requests of at most 6 MB, answers joined line by line), output encrypted with the key."""
    batch = settings.deploy["batch_transform"]
    name = endpoints.transform_job_name(
        settings.project_name, settings.env_name, t.package.version, execution
    )
    return {
        "TransformJobName": name,
        "ModelName": t.model,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{settings.data_bucket}/{batch['input_prefix']}",
                }
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": f"s3://{settings.model_bucket}/{batch['output_prefix']}{name}/",
            "AssembleWith": "Line",
            "Accept": "text/csv",
            "KmsKeyId": settings.kms_key_arn,
        },
        "TransformResources": {
            "InstanceType": batch["instance_type"],
            "InstanceCount": batch["instance_count"],
            "VolumeKmsKeyId": settings.kms_key_arn,
        },
    }


def _start_transform(settings: deployments.DeploySettings, t: Target, execution: str) -> None:
    """Once per production deploy (the name comes from the pipeline execution): a retry finds its job."""
    try:
        aws.client("sagemaker").create_transform_job(**transform_request(settings, t, execution))
    except Exception as error:
        if aws.error_code(error) != "ResourceInUse" and ALREADY_EXISTS not in str(error):
            raise


def _token(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def _entry(t: Target, status: str, execution: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "endpoint": t.endpoint,
        "endpoint_config": t.config,
        "model_package_arn": t.package.arn,
        "pipeline_execution_id": execution,
        **extra,
    }


def step(
    settings: deployments.DeploySettings, params: dict[str, str], token: dict[str, Any] | None, job_id: str
) -> ActionResult:
    t = target(settings, params["stage"], params["package_arn"])
    execution = params.get("pipeline_execution_id", "")
    sagemaker = aws.client("sagemaker")
    state = dict(token or {})
    started_at = state.get("started_at") or audit.now_iso()
    if not token:
        deployments.record_deployment(
            settings.audit_table_name,
            t.package.job_name,
            t.stage,
            t.package.version,
            _entry(t, deployments.STARTED, execution, started_at=started_at, config=_spec(settings, t.stage)),
        )
    _create(
        sagemaker.create_model,
        ModelName=t.model,
        ExecutionRoleArn=settings.endpoint_role_arn,
        Containers=[{"ModelPackageName": t.package.arn}],
    )
    _create(sagemaker.create_endpoint_config, **endpoint_config_request(settings, t))
    endpoint = _describe_endpoint(t.endpoint)
    state.update({"config": t.config, "started_at": started_at})
    if endpoint is None:
        _create(sagemaker.create_endpoint, EndpointName=t.endpoint, EndpointConfigName=t.config)
        return ActionResult(
            CONTINUE, t.endpoint, f"creating {t.endpoint} with {t.config}", token=_token(state)
        )
    status, current = endpoint.get("EndpointStatus"), endpoint.get("EndpointConfigName")
    if status in WAITING:
        return ActionResult(CONTINUE, t.endpoint, f"{t.endpoint} is {status}", token=_token(state))
    if status == "Failed":
        reason = str(endpoint.get("FailureReason") or "the endpoint failed")
        deployments.finish(
            settings,
            t.package.job_name,
            t.stage,
            t.package.version,
            _entry(t, deployments.FAILED, execution, started_at=started_at, reason=reason),
            job_id,
        )
        return ActionResult(FAILED, t.endpoint, f"{t.endpoint} failed: {reason}")
    if current == t.config:  # InService on this package's config
        _register_autoscaling(settings, t)
        if t.stage == endpoints.PRODUCTION and settings.deploy.get("batch_transform"):
            _start_transform(settings, t, execution)
        deployments.finish(
            settings,
            t.package.job_name,
            t.stage,
            t.package.version,
            _entry(t, deployments.IN_SERVICE, execution, started_at=started_at),
            job_id,
        )
        return ActionResult(
            SUCCEEDED,
            t.endpoint,
            f"{t.endpoint} serves {t.config} (package v{t.package.version})",
            output_variables={
                "ENDPOINT_NAME": t.endpoint,
                "ENDPOINT_CONFIG": t.config,
                "MODEL_NAME": t.model,
            },
        )
    if state.get("update_requested"):
        # Our update ended with the endpoint back on the old config: SageMaker rolled it back.
        since = datetime.fromisoformat(state["update_requested"])
        alarm = (
            deployments.fired_alarm(endpoints.alarm_names(t.endpoint), since)
            if t.stage == endpoints.PRODUCTION
            else None
        )
        reason = f"rolled back to {current}" + (f": alarm {alarm} fired" if alarm else "")
        deployments.finish(
            settings,
            t.package.job_name,
            t.stage,
            t.package.version,
            _entry(
                t,
                deployments.ROLLED_BACK,
                execution,
                started_at=started_at,
                alarm=alarm,
                previous_config=current,
                reason=str(endpoint.get("FailureReason") or reason),
            ),
            job_id,
        )
        return ActionResult(FAILED, t.endpoint, f"{t.endpoint}: {t.config} {reason}")
    request: dict[str, Any] = {"EndpointName": t.endpoint, "EndpointConfigName": t.config}
    if t.stage == endpoints.PRODUCTION:
        request["DeploymentConfig"] = deployment_config(settings, t.endpoint)
    _deregister_autoscaling(t)
    state["update_requested"] = datetime.now(UTC).isoformat()
    try:
        sagemaker.update_endpoint(**request)
    except Exception as error:
        # SageMaker applied the update but its answer was lost, and botocore's retry met the update in
        # progress: it is ours (the endpoint was InService on another config a moment ago), so wait for it.
        if aws.error_code(error) != "ValidationException" or IN_PROGRESS not in str(error):
            raise
        logger.warning(
            "%s: our UpdateEndpoint is already in progress (%s); waiting for it", t.endpoint, error
        )
    return ActionResult(
        CONTINUE, t.endpoint, f"updating {t.endpoint} from {current} to {t.config}", token=_token(state)
    )


def handle(job_id: str, raw_parameters: Any, raw_token: str | None) -> ActionResult:
    """One job: parse, step, report exactly one result."""
    try:
        settings = deployments.DeploySettings.from_env()
        params = pipeline_action.parameters(
            raw_parameters, ("stage", "package_arn"), ("pipeline_execution_id",)
        )
        token = json.loads(raw_token) if raw_token else None
        result = step(settings, params, token, job_id)
    except Exception as error:  # reported to CodePipeline: transient ones keep the action open
        result = pipeline_action.outcome_of_error(error, None, "deploy-model", raw_token or _token({}))
    pipeline_action.put_result(job_id, result)
    return result
