"""Requests that wait for the model at the same time share one predict call (dynamic batching).

A predict call has a fixed cost: for the default model (a tree ensemble) ~80 us here for one row, against a
few us per extra row. Under concurrency a worker's event loop holds several parsed requests
at once; they are predicted together and each gets its own rows back. With one client nothing waits: the batch
is flushed on the loop's next turn, a few us later (bench/serve.py measures both).

Rules:
- Only small requests join (at most `max_rows` rows): a large one gains nothing and is predicted on its own.
- The model's `predict` must be row-wise (each row's prediction depends on that row alone). The contract
  already requires that: batch transform splits and joins records into mini-batches as it likes.
- Memory: the shared call's input is one copy of the waiting requests' parsed rows (float32, 4 bytes a cell,
  where each cell took at least 2 bytes of its body), made and freed within the call.
- A batch whose predict raises is predicted again request by request, so a request that breaks the model
  (a bad row, a model bug) fails alone, and the others are answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
MAX_BATCH_ROWS = 64  # per request; above this, a request's own rows amortise the call's fixed cost


class PredictionBatcher:
    """One per worker, on its event loop: `await predict(features)` for each request."""

    def __init__(self, predict: Predict, max_rows: int = MAX_BATCH_ROWS) -> None:
        self._predict = predict
        self._max_rows = max_rows
        self._waiting: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.calls = 0  # predict calls made: batches, singles and retries (for tests and benchmarks)

    async def predict(self, features: np.ndarray) -> np.ndarray:
        if len(features) > self._max_rows:
            self.calls += 1
            return self._predict(features)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if not self._waiting:
            # After every request already runnable on this turn of the loop has parsed and joined.
            loop.call_soon(self._flush)
        self._waiting.append((features, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if len(batch) > 1:
            try:
                self.calls += 1
                predictions = self._predict(np.concatenate([features for features, _ in batch]))
            except Exception:
                pass  # one request may have broken it: each on its own, below
            else:
                start = 0
                for features, future in batch:
                    end = start + len(features)
                    if not future.done():  # a request whose client left is cancelled
                        future.set_result(predictions[start:end])
                    start = end
                return
        for features, future in batch:
            try:
                self.calls += 1
                result = self._predict(features)
            except Exception as error:
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)
