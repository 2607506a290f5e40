"""A local stand-in for the CodePipeline side of the Train action, used by `mlpipe-local-run`.

CodePipeline invokes the start-training Lambda with a job event, and the Lambda answers through
PutJobSuccessResult (with a continuation token while training runs) or PutJobFailureResult. This class
records those answers, validated against the real botocore service model, and builds the next job
event the way CodePipeline does, so the real handler runs unchanged.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.validate import validate_parameters

from mlpipe.local.emulator import ACCOUNT

_MODEL = botocore.session.get_session().get_service_model("codepipeline")


def _validate(operation: str, request: dict[str, Any]) -> None:
    validate_parameters(request, _MODEL.operation_model(operation).input_shape)


@dataclass
class JobResult:
    job_id: str
    succeeded: bool
    continuation_token: str | None = None
    output_variables: dict[str, str] = field(default_factory=dict)
    failure_message: str | None = None


@dataclass
class LocalCodePipeline:
    pipeline_name: str
    execution_id: str
    trigger_detail: str
    variables: dict[str, str] = field(default_factory=dict)
    results: list[JobResult] = field(default_factory=list)

    # -- the CodePipeline API calls the Lambda makes ------------------------------------------------------
    def put_job_success_result(self, **request: Any) -> dict[str, Any]:
        _validate("PutJobSuccessResult", request)
        self.results.append(
            JobResult(
                job_id=request["jobId"],
                succeeded=True,
                continuation_token=request.get("continuationToken"),
                output_variables=dict(request.get("outputVariables", {})),
            )
        )
        return {}

    def put_job_failure_result(self, **request: Any) -> dict[str, Any]:
        _validate("PutJobFailureResult", request)
        self.results.append(
            JobResult(
                job_id=request["jobId"], succeeded=False, failure_message=request["failureDetails"]["message"]
            )
        )
        return {}

    def get_pipeline_execution(self, **request: Any) -> dict[str, Any]:
        _validate("GetPipelineExecution", request)
        return {
            "pipelineExecution": {
                "pipelineName": self.pipeline_name,
                "pipelineVersion": 1,
                "pipelineExecutionId": self.execution_id,
                "status": "InProgress",
                "executionMode": "QUEUED",
                "executionType": "STANDARD",
                "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": self.trigger_detail},
                "variables": [{"name": k, "resolvedValue": v} for k, v in self.variables.items()],
            }
        }

    # -- what CodePipeline does between invocations -------------------------------------------------------
    @property
    def last_result(self) -> JobResult | None:
        return self.results[-1] if self.results else None

    def job_event(self, function_name: str, user_parameters: dict[str, str]) -> dict[str, Any]:
        """The Lambda invoke action's event; carries the last continuation token, as CodePipeline does."""
        data: dict[str, Any] = {
            "actionConfiguration": {
                "configuration": {
                    "FunctionName": function_name,
                    "UserParameters": json.dumps(user_parameters),
                }
            },
            "inputArtifacts": [],
            "outputArtifacts": [],
            "artifactCredentials": {
                "accessKeyId": "local",
                "secretAccessKey": "local",
                "sessionToken": "local",
                "expirationTime": int(datetime.now(UTC).timestamp() * 1000) + 3_600_000,
            },
        }
        last = self.last_result
        if last is not None and last.succeeded and last.continuation_token:
            data["continuationToken"] = last.continuation_token
        # Each invocation is a new job id, as in CodePipeline; only the token links them.
        return {"CodePipeline.job": {"id": str(uuid.uuid4()), "accountId": ACCOUNT, "data": data}}
