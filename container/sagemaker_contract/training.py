"""`train`: read the config and channels, fit the model, print metric lines, write the model atomically.

On any error: one paragraph in /opt/ml/output/failure (only if the file does not exist yet, so the first,
most specific reason wins, as in the SageMaker training toolkit) and exit code 1. The model directory is
only written after everything succeeded, through a staging folder, so a failure never leaves a partial model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import user_model

from sagemaker_contract import data, hyperparameters
from sagemaker_contract.errors import UserError
from sagemaker_contract.paths import OptMl

METRIC_CHANNELS = ("train", "validation")
MAX_FAILURE_CHARS = 1024  # SageMaker truncates FailureReason here


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def metric_line(channel: str, name: str, value: float) -> str:
    """The one documented format: `METRIC <channel>:<name>=<value>` (MetricDefinitions regexes match it)."""
    return f"METRIC {channel}:{name}={value:.6g}"


def write_failure(opt: OptMl, reason: str) -> None:
    """First reason wins; one paragraph."""
    paragraph = " ".join(reason.split())[:MAX_FAILURE_CHARS]
    try:
        opt.output_dir.mkdir(parents=True, exist_ok=True)
        with opt.failure_file.open("x") as handle:
            handle.write(paragraph + "\n")
        opt.failure_file.chmod(0o644)
    except FileExistsError:
        pass
    except OSError as error:
        log(f"could not write the failure file {opt.failure_file}: {error}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text() or "{}")
    except ValueError as error:
        raise UserError(f"{what} ({path.name}) is not valid JSON: {error}.") from None
    if not isinstance(value, dict):
        raise UserError(f"{what} ({path.name}) must be a JSON object.")
    return value


def _channel_dir(opt: OptMl, name: str, config: dict[str, Any], required: bool) -> Path | None:
    directory = opt.channel(name)
    if directory.is_dir():
        mode = (config.get(name) or {}).get("TrainingInputMode", "File")
        if mode == "Pipe":
            raise UserError(
                f"The '{name}' channel uses Pipe input mode, which this container does not support. Use File or FastFile."
            )
        return directory
    if not required:
        return None
    listed = f" The job's channels are: {', '.join(sorted(config))}." if config else ""
    raise UserError(
        f"The training job has no '{name}' channel (no folder {directory}).{listed} "
        f"Add an input channel named '{name}' pointing at your training data (CSV or Parquet) in S3."
    )


def _headerless(dataset: user_model.Dataset) -> bool:
    return all(re.fullmatch(r"c\d+", name) for name in [dataset.target_name, *dataset.feature_names])


def save_model_atomically(model: user_model.Model, model_dir: Path) -> None:
    """Save into a staging folder next to the model, then move the files in: never a half-written model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        user_model.save(model, staging)
        for path in sorted(staging.iterdir()):
            path.chmod(0o644)  # readable by the host and by a non-root serving user
            os.replace(path, model_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(opt: OptMl) -> None:
    started = time.perf_counter()
    raw = hyperparameters.read(opt.hyperparameters)
    params = hyperparameters.parse(raw, user_model.HYPERPARAMETERS)
    input_config = _read_json(opt.inputdataconfig, "The input data configuration")
    resources = _read_json(opt.resourceconfig, "The resource configuration")
    if resources:
        log(f"host {resources.get('current_host', '?')} of {len(resources.get('hosts', [])) or 1}")
    if len(resources.get("hosts", [])) > 1:
        log("note: this model trains on one instance; extra instances stay idle")
    log(f"hyperparameters: {json.dumps({k: v for k, v in params.items() if v is not None})}")
    content_types = data.channel_content_types(input_config)

    train_dir = _channel_dir(opt, "train", input_config, required=True)
    assert train_dir is not None
    train = data.read_channel(train_dir, "train", params["target"], content_types.get("train"))
    log(f"train: {data.describe(train)}; target '{train.target_name}'")
    validation = None
    validation_dir = _channel_dir(opt, "validation", input_config, required=False)
    if validation_dir is not None:
        validation = data.read_channel(
            validation_dir, "validation", params["target"], content_types.get("validation")
        )
        both_have_headers = not (_headerless(train) or _headerless(validation))
        if both_have_headers and validation.feature_names != train.feature_names:
            raise UserError(
                "The validation channel's columns differ from the train channel's: "
                f"{', '.join(validation.feature_names[:10])} vs {', '.join(train.feature_names[:10])}."
            )
        log(f"validation: {data.describe(validation)}")
    loaded = time.perf_counter()

    model = user_model.fit(train, validation, params, opt.checkpoint_dir)
    fitted = time.perf_counter()
    log(f"read {loaded - started:.1f} s, fit {fitted - loaded:.1f} s ({model.meta.get('num_round')} rounds)")

    for channel, dataset in (("train", train), ("validation", validation)):
        if dataset is None:
            continue
        for name, value in user_model.evaluate(model, dataset).items():
            print(metric_line(channel, name, value), flush=True)
    save_model_atomically(model, opt.model_dir)
    log(f"model saved to {opt.model_dir} in {time.perf_counter() - started:.1f} s total")


def main() -> int:
    os.umask(0o022)
    opt = OptMl.from_env()
    try:
        run(opt)
    except (UserError, user_model.ModelError) as error:
        write_failure(opt, str(error))
        log(f"Training failed: {error}")
        return 1
    except MemoryError:
        write_failure(
            opt,
            "Training ran out of memory. Use an instance type with more memory, or less data per channel.",
        )
        log(traceback.format_exc())
        return 1
    except Exception as error:  # anything else: still a readable reason, plus the traceback in the logs
        log(traceback.format_exc())
        write_failure(
            opt,
            f"Training failed with an unexpected error: {type(error).__name__}: {error}. "
            "The job's CloudWatch log has the full traceback.",
        )
        return 1
    return 0
