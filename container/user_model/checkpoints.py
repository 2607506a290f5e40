"""Checkpoints for managed spot training: saved every few rounds, atomically, and resumed from.

SageMaker syncs /opt/ml/checkpoints with S3; a restarted job finds the newest two checkpoints there, plus
`checkpoint-meta.json`, which must match this job's data and settings before training continues.

With several hosts, each host writes its own folder (`/opt/ml/checkpoints/<host>/`): SageMaker uploads every
instance's checkpoint folder to the same S3 prefix and restores all of it on every instance, so one folder per
host keeps them from overwriting each other. The hosts' boosters are identical, so a host may resume from
another host's folder (`siblings`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import xgboost as xgb
from sagemaker_contract.errors import UserError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.ubj$")
META_FILE = "checkpoint-meta.json"


class Checkpoint(xgb.callback.TrainingCallback):
    """Saves the booster every `every` rounds, atomically, keeping the newest two (spot-safe resume)."""

    def __init__(self, directory: Path, every: int, meta: dict[str, Any]) -> None:
        super().__init__()
        self.directory, self.every, self.meta = directory, every, meta

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        rounds = model.num_boosted_rounds()
        if rounds % self.every == 0:
            save(model, self.directory, rounds, self.meta)
        return False


def save(booster: xgb.Booster, directory: Path, rounds: int, meta: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"checkpoint-{rounds}.ubj"
    tmp = directory / f".tmp-checkpoint-{rounds}.ubj"
    booster.save_model(str(tmp))
    os.replace(tmp, target)  # a crash mid-write never leaves a truncated checkpoint under the real name
    (directory / f"{META_FILE}.tmp").write_text(json.dumps(meta))
    os.replace(directory / f"{META_FILE}.tmp", directory / META_FILE)
    for old in sorted(_checkpoints(directory))[:-2]:
        old[1].unlink(missing_ok=True)


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def rounds_available(directory: Path, siblings: bool = False) -> dict[int, Path]:
    """Rounds with a checkpoint in `directory` (and, with `siblings`, in the other hosts' folders next to it)."""
    found = dict(_checkpoints(directory))
    if siblings and directory.parent.is_dir():
        for other in sorted(directory.parent.iterdir()):
            if other.is_dir() and other != directory:
                for rounds, path in _checkpoints(other):
                    found.setdefault(rounds, path)
    return found


def load_latest(directory: Path) -> tuple[xgb.Booster, int] | None:
    """The newest checkpoint, or None. Raises UserError when it cannot be read."""
    found = _checkpoints(directory)
    if not found:
        return None
    rounds, path = found[-1]
    return _load(path, rounds)


def _load(path: Path, rounds: int) -> tuple[xgb.Booster, int]:
    try:
        booster = xgb.Booster(model_file=str(path))
        booster_rounds = booster.num_boosted_rounds()
    except xgb.core.XGBoostError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserError(
            f"The checkpoint {path.name} in the checkpoint folder could not be read ({first_line[:200]}). "
            "It is corrupt or from an incompatible model; delete the job's checkpoints in S3 to start training over."
        ) from error
    if booster_rounds != rounds:
        raise UserError(
            f"The checkpoint {path.name} holds {booster_rounds} rounds, not {rounds}: it is corrupt. "
            "Delete the job's checkpoints in S3 to start training over."
        )
    return booster, rounds


def resume(
    directory: Path, meta: dict[str, Any], rounds: int | None = None, siblings: bool = False
) -> tuple[xgb.Booster | None, int]:
    """(booster, rounds done) from the newest checkpoint made for the same data and settings, else (None, 0).
    `rounds`: that round's checkpoint instead of the newest (the round every host of a job has)."""
    folder = directory
    if rounds is None:
        resumed = load_latest(directory)
    else:
        path = rounds_available(directory, siblings).get(rounds)
        resumed = None if path is None else _load(path, rounds)
        folder = directory if path is None else path.parent
    if resumed is None:
        return None, 0
    saved_meta_path = folder / META_FILE
    if saved_meta_path.exists():
        try:
            saved = json.loads(saved_meta_path.read_text())
        except ValueError as error:
            raise UserError(
                f"{META_FILE} in the checkpoint folder is corrupt; delete the job's checkpoints to start over."
            ) from error
        if saved != meta:
            raise UserError(
                "The checkpoint in the checkpoint folder was made for different data or settings "
                f"({saved}) than this job ({meta}); delete the job's checkpoints to start over."
            )
    return resumed
