"""Synth: `cdk synth` through the pinned CLI, with cdk-nag: a finding fails the run as it fails a deploy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlpipe.local.console import StageFailed
from mlpipe.local.deployment import StackTemplate
from mlpipe.local.state import RunState
from mlpipe.project import ROOT


def synth(out_dir: Path, env: str | None, context: tuple[str, ...]) -> tuple[StackTemplate, StackTemplate]:
    """(data stack, pipeline stack) templates of one environment."""
    command = ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "-o", str(out_dir)]
    for item in ([f"env_name={env}"] if env else []) + list(context):
        command += ["-c", item]
    environment = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise StageFailed("cdk synth failed:\n    " + "\n    ".join(lines[-15:]))
    if env is None:
        # The app synthesizes exactly one environment: the one its context names.
        names = sorted(path.name for path in out_dir.glob("TrainingData-*.template.json"))
        if len(names) != 1:
            raise StageFailed(f"expected one TrainingData-<env> stack in {out_dir}, found {names}")
        env = names[0].removeprefix("TrainingData-").removesuffix(".template.json")
    return (
        StackTemplate.load(out_dir, f"TrainingData-{env}"),
        StackTemplate.load(out_dir, f"TrainingPipeline-{env}"),
    )


def run(state: RunState) -> None:
    state.templates = synth(state.work / "cdk.out", state.options.env, state.options.context)
