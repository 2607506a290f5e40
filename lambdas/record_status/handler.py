"""Placeholder: the real handler is built under issue 3."""

from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise NotImplementedError("handler not implemented yet")
