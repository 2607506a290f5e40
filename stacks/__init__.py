"""The CDK app: TrainingData-<env> (stateful) and TrainingPipeline-<env> (stateless)."""

from stacks.application import build_app
from stacks.config import ConfigError, PipelineConfig

__all__ = ["ConfigError", "PipelineConfig", "build_app"]
