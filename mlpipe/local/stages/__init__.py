"""The local run's stages, one module each, in pipeline order (see `mlpipe.local.run.STAGES`).

Each module has `run(state)`: it reads what earlier stages left in the `RunState`, does its part, and
leaves its own results there. A stage that cannot finish raises `StageFailed` with a one-line reason.
"""
