"""The one place the Lambdas get boto3 clients from, and the way to swap them.

Every AWS call in the Lambdas goes through `client(service)`. Clients are created lazily, cached per
(service, endpoint, region) and honour `AWS_ENDPOINT_URL`, so tests and the local run can point them at an
emulator. Replacements for single services are injected with `use_clients`::

    from pipeline_common import aws

    with aws.use_clients({"sagemaker": local_sagemaker, "codepipeline": job_result_recorder}):
        start_training.handler.lambda_handler(event, context)

A replacement only needs the methods the Lambdas call (e.g. `create_training_job`, `describe_training_job`,
`put_job_success_result`, `put_job_failure_result`, `get_pipeline_execution`), with boto3's keyword
arguments and response shapes; errors should be `botocore.exceptions.ClientError` as boto3 raises them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# boto3 is imported on first use, not at import time: it is most of a handler's cold import cost, and an
# invocation that fails validation early (or a test with injected clients) never needs it.
# Standard retry mode retries throttling and transient errors with backoff; timeouts stay well under the
# Lambda timeout so a stuck call fails with a message instead of a silent Lambda timeout.
_CLIENT_CONFIG_ARGS: dict[str, Any] = {
    "retries": {"mode": "standard", "max_attempts": 4},
    "connect_timeout": 5,
    "read_timeout": 20,
}

_overrides: dict[str, Any] = {}
_cache: dict[tuple[str, str | None, str | None], Any] = {}
_session: Any = None  # one boto3 Session: its loader caches service models across clients
_lock = threading.Lock()


def region() -> str:
    """The Lambda's region (the runtime sets AWS_REGION)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def client(service: str) -> Any:
    """A boto3 client for `service`, or the replacement injected with `use_clients`."""
    override = _overrides.get(service)
    if override is not None:
        return override
    key = (service, os.environ.get("AWS_ENDPOINT_URL"), region())
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            import boto3.session
            from botocore.config import Config

            global _session
            if _session is None:
                _session = boto3.session.Session()
            cached = _session.client(service, region_name=key[2], config=Config(**_CLIENT_CONFIG_ARGS))
            _cache[key] = cached
        return cached


@contextmanager
def use_clients(replacements: Mapping[str, Any]) -> Iterator[None]:
    """Use these objects instead of boto3 clients for the given services, restoring the previous ones after."""
    with _lock:
        saved = dict(_overrides)
        _overrides.update(replacements)
    try:
        yield
    finally:
        with _lock:
            _overrides.clear()
            _overrides.update(saved)


def clear_client_cache() -> None:
    """Forget cached boto3 clients and the session (e.g. after changing credentials in a test)."""
    global _session
    with _lock:
        _cache.clear()
        _session = None


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
