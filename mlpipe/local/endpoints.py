"""SageMaker's hosting control plane, locally: models, endpoint configs and endpoints, with blue/green
updates that shift traffic and roll back as SageMaker does (what moto lacks: `UpdateEndpoint` with
`DeploymentConfig`, a duplicate name refused, Creating/Updating before InService).

Every request is checked against botocore's SageMaker model (`model_registry.validate_request`: shapes,
lengths, ranges, enums, patterns), and answers carry the fields the handlers read.

Time is virtual: each DescribeEndpoint is one step of the endpoint's state machine, so a handler that polls
(deploy-model's continuation tokens) sees Creating, then InService, as on AWS. A blue/green update goes
through SageMaker's phases: the new fleet is created, the canary (or each linear step) gets its share of
the traffic and bakes; `alarm_check(endpoint, phase)` is asked after each bake whether an auto-rollback
alarm is in ALARM (the local run computes it from the responses the new fleet gave; tests script it). A
fired alarm returns all traffic to the old fleet (RollingBack, then InService on the old config, with the
alarm recorded in `alarm_history`, which the CloudWatch stand-in serves as DescribeAlarmHistory).

`serving` (optional) is told when a config starts or stops receiving traffic and with what share, so the
local run can run the real image's `serve` for each model and route requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from botocore.exceptions import ClientError

from mlpipe.local.emulator import ACCOUNT
from mlpipe.local.model_registry import validate_request


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class Serving(Protocol):
    def route(self, endpoint: str, weights: dict[str, float]) -> None:
        """`weights`: endpoint config name -> share of the traffic (summing to 1); {} stops serving."""


@dataclass
class Phase:
    name: str  # Creating | Baking | Shifting | RollingBack
    steps_left: int
    weights: dict[str, float]


@dataclass
class Endpoint:
    name: str
    config: str
    status: str = "Creating"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    pending: str | None = None
    deployment: dict[str, Any] | None = None
    phases: list[Phase] = field(default_factory=list)
    failure: str | None = None
    weights: dict[str, float] = field(default_factory=dict)


class LocalEndpoints:
    signing_name = "sagemaker"
    OPERATIONS: ClassVar[dict[str, str]] = {
        "CreateModel": "_create_model",
        "DescribeModel": "_describe_model",
        "CreateEndpointConfig": "_create_config",
        "DescribeEndpointConfig": "_describe_config",
        "CreateEndpoint": "_create_endpoint",
        "UpdateEndpoint": "_update_endpoint",
        "DescribeEndpoint": "_describe_endpoint",
        "CreateTransformJob": "_create_transform_job",
        "DescribeTransformJob": "_describe_transform_job",
    }

    def __init__(
        self,
        region: str,
        *,
        steps: int = 1,
        alarm_check: Callable[[str, str], str | None] | None = None,
        serving: Serving | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        run_transform: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self.region = region
        self.steps = steps  # describes before a phase ends (virtual time)
        self.alarm_check = alarm_check or (lambda endpoint, config: None)
        self.serving = serving
        self.on_event = on_event or (lambda event: None)
        # A transform job's work (`mlpipe.local.transform` on the model's `serve`): None, or why it failed.
        self.run_transform = run_transform or (lambda request: None)
        self.transform_jobs: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.alarm_history: list[tuple[datetime, str]] = []
        self.routes: list[tuple[str, dict[str, float]]] = []  # every traffic split, in order
        self.calls: list[tuple[str, dict[str, Any]]] = []  # every request
        self.accepted: list[tuple[str, dict[str, Any]]] = []  # the requests applied (not refused)
        self._lock = threading.RLock()

    def implements(self, operation: str) -> bool:
        return operation in self.OPERATIONS

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        needed = ["sagemaker:AddTags"] if operation.startswith("Create") and params.get("Tags") else []
        if operation == "CreateModel" and params.get("ExecutionRoleArn"):
            needed.append("iam:PassRole")  # SageMaker assumes the role the caller hands it
        return needed

    def call(self, operation: str, params: dict[str, Any], principal: str = "") -> dict[str, Any]:
        validate_request(operation, params)
        with self._lock:
            self.calls.append((operation, params))
            answer: dict[str, Any] = getattr(self, self.OPERATIONS[operation])(params, operation)
            self.accepted.append((operation, params))
            return answer

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:{kind}/{name.lower()}"

    # -- models and configs --------------------------------------------------------------------------------
    def _create_model(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        name = params["ModelName"]
        if name in self.models:
            raise _error(
                "ValidationException",
                f'Cannot create already existing model "{self._arn("model", name)}".',
                operation,
            )
        self.models[name] = {
            **params,
            "ModelArn": self._arn("model", name),
            "CreationTime": datetime.now(UTC),
        }
        return {"ModelArn": self._arn("model", name)}

    def _describe_model(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        model = self.models.get(params["ModelName"])
        if model is None:
            raise _error("ValidationException", f'Could not find model "{params["ModelName"]}".', operation)
        return dict(model)

    def _create_config(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        if name in self.configs:
            raise _error(
                "ValidationException",
                f'Cannot create already existing endpoint configuration "{self._arn("endpoint-config", name)}".',
                operation,
            )
        for variant in params["ProductionVariants"]:
            if variant["ModelName"] not in self.models:
                raise _error(
                    "ValidationException", f'Could not find model "{variant["ModelName"]}".', operation
                )
        arn = self._arn("endpoint-config", name)
        self.configs[name] = {**params, "EndpointConfigArn": arn, "CreationTime": datetime.now(UTC)}
        return {"EndpointConfigArn": arn}

    def _describe_config(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        config = self.configs.get(params["EndpointConfigName"])
        if config is None:
            raise _error("ValidationException", "Could not find endpoint configuration.", operation)
        return dict(config)

    # -- endpoints ---------------------------------------------------------------------------------------------
    def _create_endpoint(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        name, config = params["EndpointName"], params["EndpointConfigName"]
        if name in self.endpoints:
            raise _error(
                "ValidationException",
                f'Cannot create already existing endpoint "{self._arn("endpoint", name)}".',
                operation,
            )
        if config not in self.configs:
            raise _error(
                "ValidationException", f'Could not find endpoint configuration "{config}".', operation
            )
        endpoint = Endpoint(name, config, phases=[Phase("Creating", self.steps, {config: 1.0})])
        self.endpoints[name] = endpoint
        return {"EndpointArn": self._arn("endpoint", name)}

    def _update_endpoint(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        name, config = params["EndpointName"], params["EndpointConfigName"]
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise _error(
                "ValidationException", f'Could not find endpoint "{self._arn("endpoint", name)}".', operation
            )
        if endpoint.status != "InService":
            raise _error(
                "ValidationException",
                f'Cannot update in-progress endpoint "{self._arn("endpoint", name)}".',
                operation,
            )
        if config not in self.configs:
            raise _error(
                "ValidationException", f'Could not find endpoint configuration "{config}".', operation
            )
        old_variants = {v["VariantName"] for v in self.configs[endpoint.config]["ProductionVariants"]}
        new_variants = {v["VariantName"] for v in self.configs[config]["ProductionVariants"]}
        deployment = params.get("DeploymentConfig")
        if deployment and old_variants != new_variants:
            # Developer Guide, "Blue/Green Deployments": the new config keeps the variant names.
            raise _error(
                "ValidationException", "Blue/green deployments need the same variant names.", operation
            )
        endpoint.status, endpoint.pending, endpoint.deployment = "Updating", config, deployment
        endpoint.modified, endpoint.failure = datetime.now(UTC), None
        endpoint.phases = self._phases(endpoint.config, config, deployment)
        return {"EndpointArn": self._arn("endpoint", name)}

    def _phases(self, old: str, new: str, deployment: dict[str, Any] | None) -> list[Phase]:
        """SageMaker's blue/green sequence: the green fleet, then traffic shifted (canary, linear steps or all
        at once), each share baked; without DeploymentConfig, all at once with no bake."""
        routing = ((deployment or {}).get("BlueGreenUpdatePolicy") or {}).get(
            "TrafficRoutingConfiguration"
        ) or {}
        kind = routing.get("Type", "ALL_AT_ONCE")
        phases = [Phase("Creating", self.steps, {old: 1.0})]
        if kind == "CANARY":
            share = routing["CanarySize"]["Value"] / 100
            phases.append(Phase("Baking", self.steps, {old: 1 - share, new: share}))
        elif kind == "LINEAR":
            step = routing["LinearStepSize"]["Value"] / 100
            share = step
            while share < 1:
                phases.append(Phase("Baking", self.steps, {old: 1 - share, new: share}))
                share += step
        if deployment:
            phases.append(Phase("Baking", self.steps, {new: 1.0}))  # TerminationWaitInSeconds, still watched
        return phases

    def _route(self, endpoint: Endpoint, weights: dict[str, float]) -> None:
        if weights == endpoint.weights:
            return
        endpoint.weights = dict(weights)
        self.routes.append((endpoint.name, dict(weights)))
        if self.serving is not None:
            self.serving.route(endpoint.name, endpoint.weights)

    def _step(self, endpoint: Endpoint) -> None:
        """One unit of virtual time for an endpoint in progress."""
        if not endpoint.phases:
            return
        phase = endpoint.phases[0]
        if phase.steps_left > 0:
            self._route(endpoint, phase.weights)
            phase.steps_left -= 1
            return
        endpoint.phases.pop(0)
        if phase.name == "Baking" and endpoint.pending:
            fired = self.alarm_check(endpoint.name, endpoint.pending)
            if fired:
                self.alarm_history.append((datetime.now(UTC), fired))
                endpoint.status = "RollingBack"
                endpoint.failure = (
                    f"Endpoint update was rolled back: alarm {fired} went into ALARM during baking."
                )
                endpoint.phases = [Phase("RollingBack", self.steps, {endpoint.config: 1.0})]
                # All traffic returns to the old fleet at once; the new fleet is then torn down.
                self._route(endpoint, {endpoint.config: 1.0})
                self._emit(endpoint)
                return
        if endpoint.phases:
            self._step(endpoint)
            return
        # Done: InService on the new config, or back on the old one after a rollback.
        if endpoint.status in ("Creating",):
            pass
        elif endpoint.status == "Updating" and endpoint.pending:
            endpoint.config = endpoint.pending
        endpoint.status, endpoint.pending, endpoint.modified = "InService", None, datetime.now(UTC)
        self._route(endpoint, {endpoint.config: 1.0})
        self._emit(endpoint)

    def _describe_endpoint(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        name = params["EndpointName"]
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise _error(
                "ValidationException", f'Could not find endpoint "{self._arn("endpoint", name)}".', operation
            )
        self._step(endpoint)
        return self.description(endpoint)

    def description(self, endpoint: Endpoint) -> dict[str, Any]:
        variant = {"VariantName": "AllTraffic", "CurrentWeight": 1.0, "DesiredWeight": 1.0}
        described: dict[str, Any] = {
            "EndpointName": endpoint.name,
            "EndpointArn": self._arn("endpoint", endpoint.name),
            "EndpointConfigName": endpoint.config,
            "ProductionVariants": [variant],
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.created,
            "LastModifiedTime": endpoint.modified,
        }
        if endpoint.failure:
            described["FailureReason"] = endpoint.failure
        if endpoint.pending and endpoint.status in ("Updating", "RollingBack"):
            phase = endpoint.phases[0].name if endpoint.phases else endpoint.status
            described["PendingDeploymentSummary"] = {
                "EndpointConfigName": endpoint.pending,
                "ProductionVariants": [
                    {
                        **variant,
                        "VariantStatus": [
                            {
                                "Status": phase,
                                "StatusMessage": f"{phase} {endpoint.weights}",
                                "StartTime": endpoint.modified,
                            }
                        ],
                    }
                ],
                "StartTime": endpoint.modified,
            }
        if endpoint.deployment:
            described["LastDeploymentConfig"] = endpoint.deployment
        return described

    def _emit(self, endpoint: Endpoint) -> None:
        """A *SageMaker Endpoint Deployment State Change* event, shaped like AWS's published sample."""
        detail = {
            k: v
            for k, v in self.description(endpoint).items()
            if k not in ("CreationTime", "LastModifiedTime", "LastDeploymentConfig", "FailureReason")
        }
        detail["EndpointStatus"] = {
            "InService": "IN_SERVICE",
            "RollingBack": "ROLLING_BACK",
            "Updating": "UPDATING",
        }.get(endpoint.status, endpoint.status.upper())
        detail["CreationTime"] = int(endpoint.created.timestamp() * 1000)
        detail["LastModifiedTime"] = int(endpoint.modified.timestamp() * 1000)
        detail.pop("PendingDeploymentSummary", None)
        if endpoint.status == "RollingBack" and endpoint.pending:
            detail["PendingDeploymentSummary"] = {"EndpointConfigName": endpoint.pending}
        self.on_event(
            {
                "version": "0",
                "id": f"deployment-{endpoint.name}-{len(self.alarm_history)}-{endpoint.status}-{endpoint.modified.timestamp()}",
                "detail-type": "SageMaker Endpoint Deployment State Change",
                "source": "aws.sagemaker",
                "account": ACCOUNT,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": self.region,
                "resources": [self._arn("endpoint", endpoint.name)],
                "detail": detail,
            }
        )

    # -- transform jobs: InProgress, then (at the next describe) the work done and Completed or Failed ------
    def _create_transform_job(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        name = params["TransformJobName"]
        if name in self.transform_jobs:
            raise _error("ResourceInUse", f"Job {name} already exists.", operation)
        if params["ModelName"] not in self.models:
            raise _error("ValidationException", f'Could not find model "{params["ModelName"]}".', operation)
        arn = self._arn("transform-job", name)
        self.transform_jobs[name] = {
            **params,
            "TransformJobArn": arn,
            "TransformJobStatus": "InProgress",
            "CreationTime": datetime.now(UTC),
        }
        return {"TransformJobArn": arn}

    def _describe_transform_job(self, params: dict[str, Any], operation: str) -> dict[str, Any]:
        job = self.transform_jobs.get(params["TransformJobName"])
        if job is None:
            raise _error(
                "ValidationException", f"Could not find job {params['TransformJobName']}.", operation
            )
        if job["TransformJobStatus"] == "InProgress":
            job["TransformStartTime"] = datetime.now(UTC)
            failure = self.run_transform(job)
            job["TransformJobStatus"] = "Failed" if failure else "Completed"
            if failure:
                job["FailureReason"] = failure
            job["TransformEndTime"] = datetime.now(UTC)
            self.on_event(
                {
                    "version": "0",
                    "id": f"transform-{job['TransformJobName']}-{job['TransformJobStatus']}",
                    "detail-type": "SageMaker Transform Job State Change",
                    "source": "aws.sagemaker",
                    "account": ACCOUNT,
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "region": self.region,
                    "resources": [job["TransformJobArn"]],
                    "detail": {
                        "TransformJobName": job["TransformJobName"],
                        "TransformJobArn": job["TransformJobArn"],
                        "TransformJobStatus": job["TransformJobStatus"],
                        "ModelName": job["ModelName"],
                    },
                }
            )
        return dict(job)

    # -- CloudWatch's DescribeAlarmHistory for the rollback alarms -------------------------------------------
    def alarm_history_items(self, name: str, since: datetime) -> list[dict[str, Any]]:
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        return [
            {
                "AlarmName": alarm,
                "Timestamp": moment,
                "HistoryItemType": "StateUpdate",
                "HistorySummary": "Alarm updated from OK to ALARM",
            }
            for moment, alarm in self.alarm_history
            if alarm == name and moment >= since - timedelta(seconds=1)
        ]


class StandInClient:
    """A boto3-client-shaped front for stand-ins (`implements`/`call`), for code that takes a client: each
    method is the operation botocore names it, and errors are the ClientErrors the stand-ins raise."""

    def __init__(self, service: str, *stand_ins: Any) -> None:
        import botocore.session
        from botocore import xform_name

        model = botocore.session.get_session().get_service_model(service)
        self._operations = {xform_name(name): name for name in model.operation_names}
        self._stand_ins = stand_ins

    def __getattr__(self, method: str) -> Callable[..., dict[str, Any]]:
        operation = self._operations.get(method)
        if operation is None:
            raise AttributeError(method)
        for stand_in in self._stand_ins:
            if stand_in.implements(operation):
                return lambda **params: stand_in.call(operation, params)
        raise NotImplementedError(f"no stand-in implements {operation}")


class LocalAlarmHistory:
    """CloudWatch's DescribeAlarmHistory for the rollback alarms, from what LocalEndpoints recorded."""

    signing_name = "monitoring"
    iam_prefix = "cloudwatch"  # botocore signs CloudWatch's requests as `monitoring`; IAM says cloudwatch:

    def __init__(self, endpoints: LocalEndpoints) -> None:
        self.endpoints = endpoints

    def implements(self, operation: str) -> bool:
        return operation == "DescribeAlarmHistory"

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        return []

    def call(self, operation: str, params: dict[str, Any], principal: str = "") -> dict[str, Any]:
        import botocore.session
        from botocore.validate import validate_parameters

        model = botocore.session.get_session().get_service_model("cloudwatch")
        validate_parameters(params, model.operation_model(operation).input_shape)
        since = params.get("StartDate") or 0
        if isinstance(since, int | float):  # the JSON protocol's timestamps are epoch seconds
            since = datetime.fromtimestamp(since, UTC)
        return {"AlarmHistoryItems": self.endpoints.alarm_history_items(params["AlarmName"], since)}


class LocalAutoscaling:
    """Application Auto Scaling's scalable targets and policies, checked against botocore's model."""

    signing_name = "application-autoscaling"
    OPERATIONS = (
        "RegisterScalableTarget",
        "DeregisterScalableTarget",
        "PutScalingPolicy",
        "DescribeScalableTargets",
    )

    def __init__(self) -> None:
        self.targets: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}

    def implements(self, operation: str) -> bool:
        return operation in self.OPERATIONS

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        return []

    def call(self, operation: str, params: dict[str, Any], principal: str = "") -> dict[str, Any]:
        import botocore.session
        from botocore.validate import validate_parameters

        model = botocore.session.get_session().get_service_model("application-autoscaling")
        validate_parameters(params, model.operation_model(operation).input_shape)
        resource = params.get("ResourceId", "")
        if operation == "RegisterScalableTarget":
            self.targets[resource] = dict(params)
            return {
                "ScalableTargetARN": f"arn:aws:application-autoscaling:local:{ACCOUNT}:scalable-target/{len(self.targets)}"
            }
        if operation == "DeregisterScalableTarget":
            if self.targets.pop(resource, None) is None:
                raise _error(
                    "ObjectNotFoundException", f"No scalable target registered for {resource}", operation
                )
            self.policies = {k: v for k, v in self.policies.items() if v["ResourceId"] != resource}
            return {}
        if operation == "PutScalingPolicy":
            if resource not in self.targets:
                raise _error(
                    "ObjectNotFoundException", f"No scalable target registered for {resource}", operation
                )
            self.policies[params["PolicyName"]] = dict(params)
            return {"PolicyARN": f"arn:aws:autoscaling:local:{ACCOUNT}:scalingPolicy/{params['PolicyName']}"}
        return {"ScalableTargets": list(self.targets.values())}
