"""The contract's tests run against the fake model: nothing here depends on the model the image ships."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.container.conftest import FAKE_MODEL, model_module


@pytest.fixture(scope="package", autouse=True)
def fake_model() -> Iterator[str]:
    with model_module(FAKE_MODEL):
        yield FAKE_MODEL
