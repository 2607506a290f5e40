"""Build: the real container/Dockerfile, built with docker or rootful podman and tagged with the commit."""

from __future__ import annotations

from mlpipe.local import containers
from mlpipe.local.console import note
from mlpipe.local.state import BuiltImage, RunState

IMAGE_REPOSITORY = "ml-pipeline-trainer"


def run(state: RunState) -> None:
    source = state.need("source")
    tag = f"{IMAGE_REPOSITORY}:{source.commit[:12]}{'-dirty' if source.dirty else ''}"
    image_id = containers.build_image(tag)
    digest = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
    state.image = BuiltImage(tag=tag, digest=digest)
    note(f"{tag} ({image_id[:19]})")
