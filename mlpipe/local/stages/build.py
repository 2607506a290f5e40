"""Build: the real container/Dockerfile, built with docker or rootful podman and tagged with the commit.

The model folder comes from the synthesized template, as CodeBuild gets it: the build project's MODEL_DIR
variable (config `model_dir`, or `--model`), passed to the build as the named context `model`.
"""

from __future__ import annotations

import re
from typing import Any

from mlpipe.local import containers
from mlpipe.local.console import StageFailed, note
from mlpipe.local.state import BuiltImage, RunState
from mlpipe.project import ROOT
from stacks.model import DEFAULT_MODEL_DIR, MODEL_DIR_VARIABLE

IMAGE_REPOSITORY = "ml-pipeline-trainer"


def model_dir_of(pipeline_template: Any) -> str:
    """The MODEL_DIR variable of the template's CodeBuild project (the one image build)."""
    projects = pipeline_template.of_type("AWS::CodeBuild::Project")
    for project in projects.values():
        for variable in project["Properties"].get("Environment", {}).get("EnvironmentVariables", []):
            if variable.get("Name") == MODEL_DIR_VARIABLE and isinstance(variable.get("Value"), str):
                return variable["Value"]
    raise StageFailed(f"the pipeline template's build project has no {MODEL_DIR_VARIABLE} variable")


def run(state: RunState) -> None:
    source = state.need("source")
    model_dir = model_dir_of(state.need("templates")[1])
    # The model is part of the image: another model must not reuse the default model's tag.
    model_tag = (
        "" if model_dir == DEFAULT_MODEL_DIR else "-" + re.sub(r"[^a-z0-9_.-]+", "-", model_dir.lower())
    )
    tag = f"{IMAGE_REPOSITORY}:{source.commit[:12]}{'-dirty' if source.dirty else ''}{model_tag}"[:128]
    image_id = containers.build_image(tag, model_dir=ROOT / model_dir)
    digest = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
    state.image = BuiltImage(tag=tag, digest=digest)
    note(f"{tag} ({image_id[:19]}, model {model_dir})")
