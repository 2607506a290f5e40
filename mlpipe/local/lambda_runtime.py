"""Invoke a Lambda handler the way the Lambda runtime does: its configured environment, the variables the
runtime adds, and a context object. Used by the local run and by the tests (one fake context for both)."""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlpipe.local.emulator import ACCOUNT

REMAINING_MILLIS = 300_000


@dataclass
class LambdaContext:
    """The attributes Powertools reads from the Lambda context object."""

    function_name: str = "local-function"
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    region: str = "us-east-1"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return REMAINING_MILLIS


@contextlib.contextmanager
def lambda_environment(
    function_env: Mapping[str, str],
    endpoint_url: str,
    region: str,
    credentials: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """For one invocation: the function's configured environment, then what the Lambda runtime sets
    (region, function name, the role's credentials), and the local AWS endpoint."""
    saved = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(function_env)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_LAMBDA_FUNCTION_NAME": function_env.get("POWERTOOLS_SERVICE_NAME", "local-function"),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("LOCAL_RUN_LOG_LEVEL", "WARNING"),
            **(credentials or {}),
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_handler(handler_path: str) -> Callable[[dict[str, Any], Any], Any]:
    """`module.function` from the Lambda asset (lambdas/, installed into the venv as Lambda's /var/task)."""
    module_name, _, function_name = handler_path.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def invoke(handler_path: str, event: dict[str, Any]) -> Any:
    handler = load_handler(handler_path)
    return handler(event, LambdaContext(function_name=handler_path.split(".")[0]))
