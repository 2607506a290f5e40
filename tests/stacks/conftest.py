"""The stack tests read the app synthesized once for the whole session (`synthesized`, tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from tests.conftest import Synthesized


@pytest.fixture(scope="module")
def data_template(synthesized: Synthesized) -> Template:
    return synthesized.data


@pytest.fixture(scope="module")
def pipeline_template(synthesized: Synthesized) -> Template:
    return synthesized.pipeline


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == resource_type}


def one_of(template: dict[str, Any], resource_type: str, hint: str = "") -> dict[str, Any]:
    """Properties of the one resource of a type whose logical id contains `hint`."""
    matches = [r for lid, r in resources_of(template, resource_type).items() if hint in lid]
    assert len(matches) == 1, f"expected one {resource_type} like {hint!r}, found {len(matches)}"
    return matches[0]
