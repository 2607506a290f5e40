"""Source: the current git commit stands in for the CodeConnections source action's output."""

from __future__ import annotations

import subprocess

from mlpipe.local.console import StageFailed, note, warn
from mlpipe.local.state import RunState, SourceInfo
from mlpipe.project import ROOT


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StageFailed(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout.strip()


def read_source() -> SourceInfo:
    remote = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    repo = remote.removesuffix(".git").split(":")[-1].split("github.com/")[-1] if remote else ROOT.name
    return SourceInfo(
        commit=git("rev-parse", "HEAD"),
        branch=git("rev-parse", "--abbrev-ref", "HEAD"),
        author=git("log", "-1", "--format=%an <%ae>"),
        message=git("log", "-1", "--format=%s"),
        repo=repo,
        dirty=bool(git("status", "--porcelain")),
    )


def run(state: RunState) -> None:
    state.source = source = read_source()
    note(f"{source.commit[:12]} on {source.branch} by {source.author}: {source.message}")
    if source.dirty:
        warn("working tree has uncommitted changes")
