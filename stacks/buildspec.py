"""The CodeBuild buildspec (inline, so tests can read it from the synthesized template).

Image tags are immutable, so the layer cache cannot live under a moving tag in the image repository.
BuildKit's registry cache goes to a separate cache repository with MUTABLE tags instead; its
`image-manifest=true` form is the one ECR accepts. Every build reads and refreshes `:buildcache`,
so unchanged layers (the pip install of pinned requirements) are reused across commits.

A re-run for a commit whose image already exists (immutable tag) skips the build and push and
exports the existing image's digest, so retrying a pipeline execution never fails on a duplicate tag.

The model folder (config `model_dir`) is the build project's MODEL_DIR variable, passed to the build as the
named context that replaces the Dockerfile's `model` stage (`stacks.model.build_context_args`, which the
local build uses too).

buildx's docker-container driver runs BuildKit from an image of its own, Docker Hub's moby/buildkit by
default; Docker Hub rate-limits anonymous pulls from CodeBuild, so the builder uses an ECR Public copy.
"""

from __future__ import annotations

from typing import Any

from stacks.model import MODEL_DIR_VARIABLE, build_context_args

CACHE_TAG = "buildcache"
EXPORTED_VARIABLES = ("IMAGE_URI", "IMAGE_DIGEST")
# The Amazon ECR Public Gallery's mirror of Docker Hub's moby/buildkit (gallery.ecr.aws/vend/moby/buildkit,
# the ECR Public path docker/build-push-action used as its default BuildKit image). Pinned to a released
# version (github.com/moby/buildkit/releases) instead of the moving buildx-stable-1 tag. This machine cannot
# reach ECR Public: check the tag once with `docker manifest inspect <image>` when changing it.
BUILDKIT_IMAGE = "public.ecr.aws/vend/moby/buildkit:v0.25.0"

# `--build-context "model=$MODEL_DIR"`: the shell expands the variable, the quotes keep a path with spaces whole.
_MODEL_FLAG, _MODEL_VALUE = build_context_args(f"${MODEL_DIR_VARIABLE}")

BUILD_SCRIPT = f"""IMAGE_TAG="${{COMMIT_ID:-$CODEBUILD_RESOLVED_SOURCE_VERSION}}"
IMAGE_URI="$REPOSITORY_URI:$IMAGE_TAG"
if aws ecr describe-images --repository-name "$REPOSITORY_NAME" --image-ids imageTag="$IMAGE_TAG" >/dev/null 2>&1; then
  echo "$IMAGE_URI already exists (immutable tag): skipping build and push"
else
  docker buildx create --use --name pipeline --driver docker-container --driver-opt image={BUILDKIT_IMAGE} >/dev/null
  # Docker (not OCI) media types and no provenance attestation: SageMaker pulls a plain image manifest.
  docker buildx build \\
    --cache-from "type=registry,ref=$CACHE_REPOSITORY_URI:{CACHE_TAG}" \\
    --cache-to "type=registry,ref=$CACHE_REPOSITORY_URI:{CACHE_TAG},mode=max,image-manifest=true,oci-mediatypes=true" \\
    --provenance=false \\
    --output "type=image,name=$IMAGE_URI,push=true,oci-mediatypes=false" \\
    --label "org.opencontainers.image.revision=$IMAGE_TAG" \\
    {_MODEL_FLAG} "{_MODEL_VALUE}" \\
    container || {{ echo "image build failed"; exit 1; }}
fi
IMAGE_DIGEST="$(aws ecr describe-images --repository-name "$REPOSITORY_NAME" --image-ids imageTag="$IMAGE_TAG" --query 'imageDetails[0].imageDigest' --output text)"
case "$IMAGE_DIGEST" in sha256:*) ;; *) echo "no digest for $IMAGE_URI"; exit 1 ;; esac
# exported-variables are read from the environment when the phase ends: export them, not just set them.
export {" ".join(EXPORTED_VARIABLES)}
echo "IMAGE_URI=$IMAGE_URI IMAGE_DIGEST=$IMAGE_DIGEST"
"""


def buildspec() -> dict[str, Any]:
    return {
        "version": "0.2",
        "env": {"shell": "bash", "exported-variables": list(EXPORTED_VARIABLES)},
        "phases": {
            "pre_build": {
                "commands": [
                    'aws ecr get-login-password | docker login --username AWS --password-stdin "${REPOSITORY_URI%%/*}"',
                ]
            },
            # One script; `exit 1` fails the phase (no `set -e`: the shell is shared with CodeBuild's own steps).
            "build": {"commands": [BUILD_SCRIPT]},
        },
    }
