"""A local stand-in for the parts of CodePipeline the pipeline's Lambdas use (moto answers them with 500s).

As the service does for a Lambda invoke action, it hands out jobs (one id per invocation attempt chain,
carrying the last continuation token) and takes exactly one result per job: a second result for the same
job is `InvalidJobStateException`, an unknown job `JobNotFoundException`. A failure result fails the
execution. `StartPipelineExecution` deduplicates on `clientRequestToken`. Every request is validated
against botocore's service model; the gateway checks the caller's IAM permissions first.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters

from mlpipe.local.emulator import ACCOUNT

_MODEL = botocore.session.get_session().get_service_model("codepipeline")
IN_PROGRESS, SUCCEEDED, FAILED = "InProgress", "Succeeded", "Failed"


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@dataclass
class JobResult:
    job_id: str
    succeeded: bool
    continuation_token: str | None = None
    output_variables: dict[str, str] = field(default_factory=dict)
    failure_message: str | None = None


@dataclass
class PipelineJob:
    id: str
    execution_id: str
    function_name: str
    user_parameters: dict[str, str]
    continuation_token: str | None
    result: JobResult | None = None
    timed_out: bool = False


@dataclass
class Execution:
    id: str
    trigger_type: str
    trigger_detail: str
    variables: dict[str, str]
    status: str = IN_PROGRESS
    client_request_token: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


class LocalCodePipeline:
    """One pipeline's executions and Lambda invoke action jobs."""

    signing_name = "codepipeline"
    OPERATIONS = frozenset(
        {"PutJobSuccessResult", "PutJobFailureResult", "GetPipelineExecution", "StartPipelineExecution"}
    )

    def __init__(self, pipeline_name: str, default_variables: dict[str, str] | None = None) -> None:
        self.pipeline_name = pipeline_name
        self.default_variables = dict(default_variables or {})
        self.executions: dict[str, Execution] = {}
        self.jobs: dict[str, PipelineJob] = {}
        self.others: list[LocalCodePipeline] = []  # the account's other pipelines, answered through this one
        self._lock = threading.Lock()

    def add_pipeline(self, other: LocalCodePipeline) -> None:
        """Another pipeline of the same account (the deploy pipeline): its jobs' results and executions are
        answered here too, as CodePipeline answers for every pipeline of an account."""
        self.others.append(other)

    def _owner(self, params: dict[str, Any]) -> LocalCodePipeline:
        name = params.get("pipelineName", params.get("name"))
        for other in self.others:
            if params.get("jobId") in other.jobs or (name is not None and name == other.pipeline_name):
                return other
        return self

    # -- LocalService ----------------------------------------------------------------------------------
    def implements(self, operation: str) -> bool:
        return operation in self.OPERATIONS

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        return []

    def call(self, operation: str, params: dict[str, Any], principal: str = "") -> dict[str, Any]:
        validate_parameters(params, _MODEL.operation_model(operation).input_shape)
        owner = self._owner(params)
        if owner is not self:
            return owner.call(operation, params, principal)
        handler = {
            "PutJobSuccessResult": self._put_job_success_result,
            "PutJobFailureResult": self._put_job_failure_result,
            "GetPipelineExecution": self._get_pipeline_execution,
            "StartPipelineExecution": self._start_pipeline_execution,
        }[operation]
        with self._lock:
            return handler(params)

    # -- what CodePipeline does around the action (the harness drives it) ------------------------------
    def start_execution(
        self, trigger_type: str, trigger_detail: str, variables: dict[str, str] | None = None
    ) -> str:
        execution = Execution(
            id=str(uuid.uuid4()),
            trigger_type=trigger_type,
            trigger_detail=trigger_detail,
            variables={**self.default_variables, **(variables or {})},
        )
        with self._lock:
            self.executions[execution.id] = execution
        return execution.id

    def new_job(
        self, execution_id: str, function_name: str, user_parameters: dict[str, str]
    ) -> dict[str, Any]:
        """The next Lambda invoke action job of an execution's action (named by its function): a new job id
        carrying that action's last continuation token, as CodePipeline creates one after each
        PutJobSuccessResult with a token."""
        with self._lock:
            last = self.last_result(execution_id, function_name)
            token = last.continuation_token if last is not None and last.succeeded else None
            job = PipelineJob(str(uuid.uuid4()), execution_id, function_name, dict(user_parameters), token)
            self.jobs[job.id] = job
        return self.job_event(job.id)

    def job_event(self, job_id: str) -> dict[str, Any]:
        """The invoke event of a job (the same event again when Lambda retries an invocation)."""
        job = self.jobs[job_id]
        data: dict[str, Any] = {
            "actionConfiguration": {
                "configuration": {
                    "FunctionName": job.function_name,
                    "UserParameters": json.dumps(job.user_parameters),
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
        if job.continuation_token:
            data["continuationToken"] = job.continuation_token
        return {"CodePipeline.job": {"id": job.id, "accountId": ACCOUNT, "data": data}}

    def result(self, job_id: str) -> JobResult | None:
        return self.jobs[job_id].result

    def time_out(self, job_id: str) -> None:
        """No result arrived in time: CodePipeline fails the action and so the execution."""
        with self._lock:
            job = self.jobs[job_id]
            if job.result is None:
                job.timed_out = True
                self.executions[job.execution_id].status = FAILED

    def last_result(self, execution_id: str, function_name: str | None = None) -> JobResult | None:
        """The latest result of the execution's jobs (of one action's function, if given)."""
        results = [
            job.result
            for job in self.jobs.values()
            if job.execution_id == execution_id
            and job.result
            and (function_name is None or job.function_name == function_name)
        ]
        return results[-1] if results else None

    def succeed(self, execution_id: str) -> None:
        with self._lock:
            self.executions[execution_id].status = SUCCEEDED

    # -- the API calls ---------------------------------------------------------------------------------
    def _job_for_result(self, params: dict[str, Any], operation: str) -> PipelineJob:
        job = self.jobs.get(params["jobId"])
        if job is None:
            raise _error("JobNotFoundException", f"The job {params['jobId']} was not found.", operation)
        if job.result is not None or job.timed_out:
            raise _error(
                "InvalidJobStateException",
                f"The job {job.id} is in an invalid state: it already has a result or timed out.",
                operation,
            )
        return job

    def _put_job_success_result(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job_for_result(params, "PutJobSuccessResult")
        job.result = JobResult(
            job_id=job.id,
            succeeded=True,
            continuation_token=params.get("continuationToken"),
            output_variables=dict(params.get("outputVariables", {})),
        )
        return {}

    def _put_job_failure_result(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job_for_result(params, "PutJobFailureResult")
        job.result = JobResult(
            job_id=job.id, succeeded=False, failure_message=params["failureDetails"]["message"]
        )
        self.executions[job.execution_id].status = FAILED
        return {}

    def _execution(self, params: dict[str, Any], operation: str) -> Execution:
        if params.get("pipelineName", params.get("name")) != self.pipeline_name:
            raise _error(
                "PipelineNotFoundException", f"Pipeline {params.get('pipelineName')} not found.", operation
            )
        execution = self.executions.get(params.get("pipelineExecutionId", ""))
        if execution is None:
            raise _error(
                "PipelineExecutionNotFoundException", "The pipeline execution was not found.", operation
            )
        return execution

    def _get_pipeline_execution(self, params: dict[str, Any]) -> dict[str, Any]:
        execution = self._execution(params, "GetPipelineExecution")
        return {
            "pipelineExecution": {
                "pipelineName": self.pipeline_name,
                "pipelineVersion": 1,
                "pipelineExecutionId": execution.id,
                "status": execution.status,
                "executionMode": "QUEUED",
                "executionType": "STANDARD",
                "trigger": {"triggerType": execution.trigger_type, "triggerDetail": execution.trigger_detail},
                "variables": [{"name": k, "resolvedValue": v} for k, v in execution.variables.items()],
            }
        }

    def _start_pipeline_execution(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["name"] != self.pipeline_name:
            raise _error(
                "PipelineNotFoundException", f"Pipeline {params['name']} not found.", "StartPipelineExecution"
            )
        token = params.get("clientRequestToken")
        for execution in self.executions.values():
            if token and execution.client_request_token == token:
                return {"pipelineExecutionId": execution.id}
        variables = {item["name"]: item["value"] for item in params.get("variables", [])}
        execution_id = str(uuid.uuid4())
        self.executions[execution_id] = Execution(
            id=execution_id,
            trigger_type="StartPipelineExecution",
            trigger_detail="local",
            variables={**self.default_variables, **variables},
            client_request_token=token,
        )
        return {"pipelineExecutionId": execution_id}
