"""The default model's own tests: XGBoost objectives, checkpoints, fast predict, categorical features."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.container.conftest import model_module


@pytest.fixture(scope="package", autouse=True)
def default_model() -> Iterator[None]:
    with model_module(None):
        yield
