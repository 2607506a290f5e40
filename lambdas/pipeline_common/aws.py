"""The one place the Lambdas get boto3 clients from.

Every AWS call in the Lambdas goes through `client(service)`. Clients are created lazily and cached per
(service, endpoint, region, credentials); they honour `AWS_ENDPOINT_URL`, so the tests and the local run
point them at the local AWS (`mlpipe.local.gateway`) with the credentials of each function's own role.

Retries and timeouts are botocore's, configured once here: standard retry mode retries throttling,
5xx and connection errors with jittered backoff; the timeouts keep one stuck call well inside the
function's timeout. `is_transient` classifies what is left after those retries the same way.

`client_hooks` is the seam for seeded fault injection: each hook is called with every client created
inside the block (to register botocore event handlers). Production never uses it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# boto3 is imported on first use, not at import time: it is most of a handler's cold import cost.
CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "max_attempts": 4},
    "connect_timeout": 3,
    "read_timeout": 10,
}

_overrides: dict[str, Any] = {}
_hooks: list[Callable[[Any], None]] = []
_cache: dict[tuple[str | None, ...], Any] = {}
_sessions: dict[tuple[str | None, ...], Any] = {}
_lock = threading.Lock()


def region() -> str:
    """The Lambda's region (the runtime sets AWS_REGION)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _credentials_key() -> tuple[str | None, ...]:
    # A Lambda sandbox has one role; the local run and the tests switch roles between invocations.
    return tuple(os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"))


def client(service: str) -> Any:
    """A boto3 client for `service`, or the replacement injected with `use_clients`."""
    override = _overrides.get(service)
    if override is not None:
        return override
    credentials = _credentials_key()
    key = (service, os.environ.get("AWS_ENDPOINT_URL"), region(), *credentials)
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            import boto3.session
            from botocore.config import Config

            session = _sessions.get(credentials)
            if session is None:
                # One Session per identity: its loader caches service models across that identity's clients.
                session = _sessions[credentials] = boto3.session.Session()
            cached = session.client(service, region_name=region(), config=Config(**CLIENT_CONFIG))
            for hook in _hooks:
                hook(cached)
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


@contextmanager
def client_hooks(*hooks: Callable[[Any], None]) -> Iterator[None]:
    """Call each hook with every client created inside the block (fault injection in tests)."""
    clear_client_cache()
    with _lock:
        _hooks.extend(hooks)
    try:
        yield
    finally:
        with _lock:
            for hook in hooks:
                _hooks.remove(hook)
        clear_client_cache()


def clear_client_cache() -> None:
    """Forget cached clients and sessions (e.g. after changing endpoint or credentials in a test)."""
    with _lock:
        _cache.clear()
        _sessions.clear()


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(error: BaseException) -> bool:
    """Throttling, a 5xx or a connection/timeout error: what botocore's standard mode retries.

    Called on what is left after those retries, to tell "try again later" from a real failure.
    """
    from types import SimpleNamespace

    from botocore.retries import standard

    parsed = getattr(error, "response", None)
    parsed = parsed if isinstance(parsed, dict) else None
    status = (parsed or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    context = standard.RetryContext(
        attempt_number=1,
        parsed_response=parsed,
        http_response=SimpleNamespace(status_code=status, headers={}) if status else None,
        caught_exception=None if parsed else error,
    )
    checker = standard.OrRetryChecker(
        [standard.TransientRetryableChecker(), standard.ThrottledRetryableChecker()]
    )
    return bool(checker.is_retryable(context)) or status == 429
