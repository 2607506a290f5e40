"""Errors whose message is meant for a person: it ends up in a log line, a CodePipeline failure or a DLQ."""


class PipelineError(Exception):
    """Base class: the message says what is wrong and, where possible, what to do."""


class ConfigurationError(PipelineError):
    """The Lambda environment (set by the pipeline stack) is missing or invalid."""


class BadInputError(PipelineError):
    """The event or the action's user parameters are malformed."""


class TrainingJobError(PipelineError):
    """The training job could not be started or ended unsuccessfully."""
