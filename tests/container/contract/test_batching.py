"""sagemaker_contract.batching: requests waiting at the same time share one predict call, and each gets
exactly its own rows' predictions, whatever the others do."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sagemaker_contract.batching import PredictionBatcher


class RowModel:
    """A row-wise model that records the batches it was called with: each row's prediction is its sum, and
    with two outputs also its first value (a (rows, 2) answer, as a multi-class model gives)."""

    def __init__(self, outputs: int = 1, fail_on: float | None = None) -> None:
        self.outputs = outputs
        self.fail_on = fail_on
        self.batches: list[int] = []

    def __call__(self, features: np.ndarray) -> np.ndarray:
        self.batches.append(len(features))
        if self.fail_on is not None and np.any(features == self.fail_on):
            raise RuntimeError("a row the model cannot take")
        sums = features.sum(axis=1)
        return sums if self.outputs == 1 else np.stack([sums, features[:, 0]], axis=1)


def requests(count: int, seed: int, max_rows: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(1, max_rows + 1)), 4)).astype(np.float32) for _ in range(count)]


async def concurrently(batcher: PredictionBatcher, batch: list[np.ndarray]) -> list[object]:
    return await asyncio.gather(*(batcher.predict(features) for features in batch), return_exceptions=True)


@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("seed", range(5))
def test_concurrent_requests_share_one_call_and_each_gets_its_own_rows(outputs: int, seed: int) -> None:
    model = RowModel(outputs)
    batch = requests(12, seed)
    answers = asyncio.run(concurrently(PredictionBatcher(model), batch))
    assert model.batches == [sum(len(features) for features in batch)]  # one call for all twelve
    for features, answer in zip(batch, answers, strict=True):
        np.testing.assert_array_equal(answer, RowModel(outputs)(features))


def test_a_lone_request_is_predicted_on_the_next_turn_of_the_loop() -> None:
    model = RowModel()
    batcher = PredictionBatcher(model)

    async def one_after_another() -> None:
        for features in requests(3, seed=7):
            np.testing.assert_array_equal(await batcher.predict(features), features.sum(axis=1))

    asyncio.run(one_after_another())
    assert batcher.calls == 3 and len(model.batches) == 3


def test_a_large_request_is_predicted_on_its_own() -> None:
    model = RowModel()
    large = np.ones((65, 4), dtype=np.float32)
    small = requests(4, seed=3)
    answers = asyncio.run(concurrently(PredictionBatcher(model, max_rows=64), [large, *small]))
    assert sorted(model.batches) == sorted([65, sum(len(features) for features in small)])
    np.testing.assert_array_equal(answers[0], np.full(65, 4.0))


def test_a_request_that_breaks_the_model_fails_alone() -> None:
    model = RowModel(fail_on=99.0)
    batch = requests(6, seed=11)
    bad = np.array([[1.0, 99.0, 2.0, 3.0]], dtype=np.float32)
    batch.insert(2, bad)
    answers = asyncio.run(concurrently(PredictionBatcher(model), batch))
    assert isinstance(answers[2], RuntimeError)
    for features, answer in zip(batch, answers, strict=True):
        if features is not bad:
            np.testing.assert_array_equal(answer, features.sum(axis=1))
    # The shared call failed, then each request was predicted on its own.
    assert model.batches == [sum(len(features) for features in batch), *(len(f) for f in batch)]


def test_a_request_whose_client_left_does_not_disturb_the_others() -> None:
    model = RowModel()
    batch = requests(5, seed=5)

    async def one_cancelled() -> list[object]:
        tasks = [asyncio.ensure_future(PredictionBatcher.predict(batcher, features)) for features in batch]
        await asyncio.sleep(0)  # every task has joined the batch
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    batcher = PredictionBatcher(model)
    answers = asyncio.run(one_cancelled())
    assert isinstance(answers[1], asyncio.CancelledError)
    for index in (0, 2, 3, 4):
        np.testing.assert_array_equal(answers[index], batch[index].sum(axis=1))
