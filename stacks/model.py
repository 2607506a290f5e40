"""The configured model folder (`model_dir`): how the image is built with it, and what the stacks read from it.

CDK-free, so the local run uses the same facts: the CodeBuild buildspec and `mlpipe.local.containers`
both pass the folder to the image build as the named build context `model` (the Dockerfile's `model`
stage), and the pipeline stack carries the folder in the build project's `MODEL_DIR` variable, which the
local Build stage reads back from the synthesized template.

The model's `model.json` manifest (owned by the container's contract, `sagemaker_contract.interface`)
declares the metric names the model reports. The stack reads them at synth: the MetricDefinitions are
every metric channel x those names, and the quality gate and the tuning objective are checked against them.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pipeline_common.metrics import CHANNELS, MAX_METRIC_DEFINITIONS
from sagemaker_contract.interface import MANIFEST_NAME, read_manifest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = "container/user_model"
# The Dockerfile's stage that holds the model; a named build context of this name replaces it.
BUILD_CONTEXT = "model"
# The build project's environment variable that names the folder (buildspec and local Build stage).
MODEL_DIR_VARIABLE = "MODEL_DIR"
# A metric name goes into `METRIC <channel>:<name>=<value>` lines and into `<channel>:<name>` names: no
# whitespace, and neither of the two separators.
_METRIC_NAME = re.compile(r"^[^\s:=]{1,200}$")


class ModelDirError(ValueError):
    """The model folder or its manifest is unusable; str(error) is one sentence."""


def build_context_args(model_dir: str) -> list[str]:
    """The image build's arguments that put `model_dir` in place of the Dockerfile's `model` stage."""
    return ["--build-context", f"{BUILD_CONTEXT}={model_dir}"]


def check_model_dir(model_dir: str, root: Path = PROJECT_ROOT) -> str:
    """`model_dir` as a clean path relative to the repository root, or ModelDirError.

    Relative and inside the repository because CodeBuild builds from the pipeline's source artifact: a
    folder anywhere else is not there.
    """
    path = PurePosixPath(model_dir)
    if not model_dir or path.is_absolute() or ".." in path.parts:
        raise ModelDirError("a folder inside the repository, relative to its root, like container/user_model")
    if not (root / path / MANIFEST_NAME).is_file():
        raise ModelDirError(f"a model folder with a {MANIFEST_NAME} manifest (none in {path})")
    return str(path)


def metric_names(model_dir: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The metric names the model's manifest declares, checked against SageMaker's limits."""
    try:
        names = read_manifest(root / check_model_dir(model_dir, root) / MANIFEST_NAME)["metrics"]
    except ValueError as error:
        raise ModelDirError(f"a valid {MANIFEST_NAME}: {error}") from None
    for name in names:
        if not _METRIC_NAME.match(name):
            raise ModelDirError(f"metric names without spaces, ':' or '=' in {MANIFEST_NAME} (got {name!r})")
    if len(set(names)) != len(names):
        raise ModelDirError(f"metric names without repeats in {MANIFEST_NAME}")
    if len(CHANNELS) * len(names) > MAX_METRIC_DEFINITIONS:
        raise ModelDirError(
            f"at most {MAX_METRIC_DEFINITIONS // len(CHANNELS)} metric names in {MANIFEST_NAME}: each is reported "
            f"on {len(CHANNELS)} channels and SageMaker takes at most {MAX_METRIC_DEFINITIONS} metric "
            f"definitions (got {len(names)})"
        )
    return tuple(names)
