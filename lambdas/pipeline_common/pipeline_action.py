"""CodePipeline's Lambda invoke action, as every action of this pipeline uses it (start-training,
evaluate-model, register-model): its parameters, the one result a job takes, and the failure types.

What CodePipeline does (AWS CodePipeline User Guide): it invokes the function asynchronously with a job;
the job takes exactly one result (a second one is `InvalidJobStateException`); a success with a
continuation token re-invokes the action with a new job carrying the token; output variables may only be
sent without a token; the action fails if no result arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline_common import aws
from pipeline_common.errors import BadInputError, ConfigurationError

logger = logging.getLogger(__name__)

CONTINUE = "continue"
SUCCEEDED = "succeeded"
FAILED = "failed"
MAX_FAILURE_MESSAGE = 5000  # CodePipeline's limit on FailureDetails.message
MAX_SUMMARY = 2048  # and on ExecutionDetails.summary
ALREADY_REPORTED = "InvalidJobStateException"


@dataclass(frozen=True)
class ActionResult:
    """What was reported to CodePipeline (also the handler's return value, for logs and tests)."""

    outcome: str  # CONTINUE, SUCCEEDED or FAILED
    job_name: str | None = None  # the external execution (a training job) the action is about
    message: str = ""
    output_variables: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # the continuation token, with CONTINUE
    failure_type: str = "JobFailed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "job_name": self.job_name,
            "message": self.message,
            "output_variables": self.output_variables,
        }


@dataclass(frozen=True)
class UnreadableParameters:
    """UserParameters that are not JSON: reported as the action's failure once the job id is known."""

    reason: str


def job_id_of(event: Any) -> str | None:
    job = event.get("CodePipeline.job") if isinstance(event, dict) else None
    job_id = job.get("id") if isinstance(job, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def require_job_id(event: Any, function: str) -> str:
    """The job id of a CodePipeline job event. Anything else has no job to report a failure to, so the
    invocation fails loudly instead: BadInputError, logged with the event's keys."""
    job_id = job_id_of(event)
    if job_id is None:
        logger.error("not a CodePipeline job event", extra={"event_keys": sorted(event or {})})
        raise BadInputError(f"{function} expects a CodePipeline job event (CodePipeline.job.id is missing)")
    return job_id


def user_parameters_of(job_event: Any) -> Any:
    """The decoded UserParameters of a Powertools CodePipelineJobEvent, or UnreadableParameters."""
    try:
        return job_event.decoded_user_parameters
    except ValueError as error:
        return UnreadableParameters(f"UserParameters is not valid JSON: {error}")


def resolved(value: Any) -> str:
    """A parameter CodePipeline did not resolve stays `#{Namespace.Variable}`: treat it as missing."""
    text = str(value).strip() if value is not None else ""
    return "" if text.startswith("#{") else text


def parameters(raw: Any, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, str]:
    """The action's UserParameters as strings (optional ones '' when absent); BadInputError naming what
    is missing, since a parameter the pipeline does not pass is a bug in its definition."""
    required, optional = tuple(required), tuple(optional)
    if isinstance(raw, UnreadableParameters):
        raise BadInputError(raw.reason)
    if not isinstance(raw, Mapping):
        raise BadInputError("UserParameters must be a JSON object with " + ", ".join(required))
    values = {name: resolved(raw.get(name)) for name in (*required, *optional)}
    missing = [name for name in required if not values[name]]
    if missing:
        raise BadInputError(
            f"UserParameters is missing {', '.join(missing)} (empty or unresolved); the action must pass "
            f"{', '.join(required)}"
        )
    return values


def failure_type_for(error: BaseException) -> str:
    if isinstance(error, ConfigurationError | BadInputError):
        return "ConfigurationError"
    code = aws.error_code(error)
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
        return "PermissionError"
    return "JobFailed"


def outcome_of_error(error: Exception, name: str | None, action: str, retry_token: str) -> ActionResult:
    """What an action whose steps are all idempotent reports for an error: a transient one (or an email
    lease another invocation holds) keeps the action open, and the next invocation repeats the steps;
    anything else fails it with the error's message."""
    from pipeline_common.audit import LeaseHeld

    message = f"{type(error).__name__}: {error}"
    if isinstance(error, LeaseHeld) or aws.is_transient(error):
        logger.warning("%s: the action stays open and retries: %s", action, message)
        return ActionResult(CONTINUE, name, f"{action} {name}: retrying ({message[:300]})", token=retry_token)
    logger.error("%s failed: %s", action, message, exc_info=error)
    return ActionResult(FAILED, name, message, failure_type=failure_type_for(error))


def put_result(job_id: str, result: ActionResult) -> bool:
    """Report `result` for the job. False if the job had a result already (an earlier attempt's report was
    applied, or the action ended): logged, not raised. Any other error raises, so Lambda retries the
    invocation with the same job and nothing is left unreported."""
    codepipeline = aws.client("codepipeline")
    details: dict[str, Any] = {"summary": result.message[:MAX_SUMMARY] or result.outcome}
    if result.job_name:
        details["externalExecutionId"] = result.job_name
    try:
        if result.outcome == FAILED:
            failure = {
                "type": result.failure_type,
                "message": result.message[:MAX_FAILURE_MESSAGE] or "failed",
            }
            if result.job_name:
                failure["externalExecutionId"] = result.job_name
            codepipeline.put_job_failure_result(jobId=job_id, failureDetails=failure)
        elif result.outcome == CONTINUE:
            codepipeline.put_job_success_result(
                jobId=job_id, continuationToken=result.token, executionDetails=details
            )
        else:
            codepipeline.put_job_success_result(
                jobId=job_id,
                outputVariables=result.output_variables,
                executionDetails={**details, "percentComplete": 100},
            )
    except Exception as error:
        if aws.error_code(error) != ALREADY_REPORTED:
            raise
        logger.warning("CodePipeline job %s already has a result or has ended: %s", job_id, error)
        return False
    return True
