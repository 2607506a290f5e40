"""model-meta.json: what the contract knows about a trained model, written next to the model's own files.

The same JSON goes to two places:
- `/opt/ml/model/model-meta.json`: serving reads the feature names, the categories of each text column and
  the class labels from it, whatever the model is (it travels inside model.tar.gz);
- `/opt/ml/output/data/model-meta.json`: the job's output (SageMaker uploads it as output.tar.gz).

A one-line summary without the per-feature lists is printed to stdout as `MODEL-META {json}`, so the task
reaches the job's log (and whatever reads it) without unpacking anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

META_FILE = "model-meta.json"
FORMAT = 1
SUMMARY_PREFIX = "MODEL-META "
SUMMARY_LIST_LIMIT = 50  # classes / categorical feature names shown in the one-line summary


@dataclass
class ModelMeta:
    model_module: str
    model_name: str
    task: str
    task_source: str  # problem_type | model | target
    task_reason: str
    target: str
    feature_names: list[str]
    classes: list[Any] | None = None
    categories: dict[str, list[str]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # the model's describe()
    rows: dict[str, int] = field(default_factory=dict)  # per channel
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # per channel
    final_metrics_channel: str | None = None  # test, else validation, else train
    hosts: int = 1  # the training job's hosts (rows: every host's share of the train channel)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False, default=str)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-feature lists, for the one-line log summary."""
        categorical = list(self.categories)
        return {
            "task": self.task,
            "task_source": self.task_source,
            "task_reason": self.task_reason,
            "target": self.target,
            "classes": None if self.classes is None else self.classes[:SUMMARY_LIST_LIMIT],
            "num_classes": None if self.classes is None else len(self.classes),
            "num_features": len(self.feature_names),
            "categorical_features": categorical[:SUMMARY_LIST_LIMIT],
            "num_categorical_features": len(categorical),
            "model_module": self.model_module,
            "model_name": self.model_name,
            "model": self.model,
            "rows": self.rows,
            "final_metrics_channel": self.final_metrics_channel,
        }

    def summary_line(self) -> str:
        return SUMMARY_PREFIX + json.dumps(
            self.summary(), separators=(",", ":"), allow_nan=False, default=str
        )

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / META_FILE
        tmp = directory / f".{META_FILE}.tmp"
        tmp.write_text(self.to_json())
        tmp.chmod(0o644)
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> ModelMeta:
        raw = json.loads((directory / META_FILE).read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"{META_FILE} has format {raw.get('format')}, this container reads {FORMAT}")
        return cls(**raw)


def is_saved_in(directory: Path) -> bool:
    return (directory / META_FILE).is_file()
