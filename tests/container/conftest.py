"""Fixtures for the container tests: a temporary /opt/ml tree and an in-process `train` run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
METRIC_RE = r"^METRIC (train|validation):(rmse|mae|r2|logloss|accuracy|auc)=(-?[0-9.]+(?:e[-+]?\d+)?|nan)$"
DEFAULT_HYPERPARAMETERS = {"num_round": "100", "max_depth": "6", "eta": "0.2"}


def make_opt_ml(
    root: Path,
    hyperparameters: dict[str, str] | None = None,
    channels: dict[str, Path | None] | None = None,
) -> Path:
    """An /opt/ml tree as SageMaker lays it out. channels: name -> a source folder to copy (None: the sample)."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    channels = {"train": None, "validation": None} if channels is None else channels
    (config / "hyperparameters.json").write_text(
        json.dumps(DEFAULT_HYPERPARAMETERS if hyperparameters is None else hyperparameters)
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
