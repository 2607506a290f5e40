"""Fixtures for the container tests: a temporary /opt/ml tree, an in-process `train` run, the model module.

Layout: `contract/` tests the contract against `fake_model/` (a tiny real model that implements only what the
interface requires), so they survive a model swap; `xgboost_model/` tests the default model; `test_models.py`
runs every model (fake, default, `examples/*`) through the same contract; `test_image.py` builds real images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
METRIC_RE = (
    r"^METRIC (train|validation|test):(rmse|mae|r2|logloss|accuracy|auc)=(-?[0-9.]+(?:e[-+]?\d+)?|nan)$"
)
FAKE_MODEL = "tests.container.fake_model"
MODEL_MODULE_ENV = "MLPIPE_MODEL_MODULE"


@contextlib.contextmanager
def model_module(name: str | None) -> Iterator[None]:
    """Train and serve in-process with the model module `name` (None: the default, user_model)."""
    previous = os.environ.get(MODEL_MODULE_ENV)
    if name is None:
        os.environ.pop(MODEL_MODULE_ENV, None)
    else:
        os.environ[MODEL_MODULE_ENV] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MODEL_MODULE_ENV, None)
        else:
            os.environ[MODEL_MODULE_ENV] = previous


def make_opt_ml(
    root: Path,
    hyperparameters: dict[str, str] | None = None,
    channels: dict[str, Path | None] | None = None,
) -> Path:
    """An /opt/ml tree as SageMaker lays it out. channels: name -> a source folder to copy (None: the sample).
    No hyperparameters given: none at all, so the model's own defaults apply."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    channels = {"train": None, "validation": None} if channels is None else channels
    (config / "hyperparameters.json").write_text(
        json.dumps({} if hyperparameters is None else hyperparameters)
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps({name: {"ContentType": "text/csv", "TrainingInputMode": "File"} for name in channels})
    )
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    for name, source in channels.items():
        shutil.copytree(source or SAMPLE / name, root / "input" / "data" / name)
    return root


@dataclass
class TrainResult:
    exit_code: int
    stdout: str
    stderr: str
    opt_ml: Path

    @property
    def failure(self) -> str | None:
        path = self.opt_ml / "output" / "failure"
        return path.read_text() if path.exists() else None

    @property
    def model_files(self) -> list[str]:
        return sorted(p.name for p in (self.opt_ml / "model").iterdir())


@pytest.fixture
def run_train(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[Path], TrainResult]:
    from sagemaker_contract import training

    def run(opt_ml: Path) -> TrainResult:
        monkeypatch.setenv("OPT_ML_DIR", str(opt_ml))
        code = training.main()
        captured = capsys.readouterr()
        return TrainResult(code, captured.out, captured.err, opt_ml)

    return run


# -- what a failed training run must look like (the contract and the default model alike) -----------


def assert_failed(result: TrainResult, *fragments: str) -> str:
    assert result.exit_code != 0
    assert result.failure, "no failure file"
    reason = result.failure
    assert "\n" not in reason.strip(), "the failure reason must be one paragraph"
    assert "Traceback" not in reason
    for fragment in fragments:
        assert fragment.lower() in reason.lower(), reason
    assert result.model_files == [], f"partial model left behind: {result.model_files}"
    return reason


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
