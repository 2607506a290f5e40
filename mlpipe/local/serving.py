"""The models behind local endpoints: the real image's `serve` on each endpoint config's packaged model.

`LocalServing` is LocalEndpoints' `serving`: when a config gets a share of an endpoint's traffic, its model
(the package's `ModelDataUrl`, downloaded from the emulated S3 and unpacked as SageMaker does into
/opt/ml/model) is served by a container of the image (`containers.serve`); when no endpoint routes to a
config any more (after the update, or after a rollback tore the new fleet down) its container stops.
`backend(config)` and `weights(endpoint)` are what `LocalInferenceApi` routes with.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpipe.local import containers
from mlpipe.local.stages.serve import download_model


class LocalServing:
    def __init__(
        self,
        work: Path,
        model_of_config: Callable[[str], tuple[str, str]],  # config → (image to run, s3:// model.tar.gz)
        s3: Any,
        start: Callable[[str, Path], contextlib.AbstractContextManager[str]] = containers.serve,
    ) -> None:
        self.work, self.model_of_config, self.s3, self.start = work, model_of_config, s3, start
        self.routes: dict[str, dict[str, float]] = {}
        self.urls: dict[str, str] = {}
        self._stacks: dict[str, contextlib.ExitStack] = {}
        self._lock = threading.RLock()

    def route(self, endpoint: str, weights: dict[str, float]) -> None:
        with self._lock:
            for config, weight in weights.items():
                if weight > 0 and config not in self.urls:
                    self._start(config)
            self.routes[endpoint] = dict(weights)
            live = {c for split in self.routes.values() for c, w in split.items() if w > 0}
            for config in [c for c in self.urls if c not in live]:
                self._stop(config)

    def _start(self, config: str) -> None:
        image, model_uri = self.model_of_config(config)
        model_dir = self.work / "endpoints" / config / "model"
        if not model_dir.exists():
            download_model(self.s3, model_uri, model_dir)
        stack = contextlib.ExitStack()
        self.urls[config] = stack.enter_context(self.start(image, model_dir))
        self._stacks[config] = stack

    def _stop(self, config: str) -> None:
        self.urls.pop(config, None)
        stack = self._stacks.pop(config, None)
        if stack is not None:
            stack.close()

    def backend(self, config: str) -> str | None:
        return self.urls.get(config)

    def weights(self, endpoint: str) -> dict[str, float]:
        return dict(self.routes.get(endpoint, {}))

    def close(self) -> None:
        with self._lock:
            for config in list(self._stacks):
                self._stop(config)
