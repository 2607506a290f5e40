"""Which live processes carry an environment mark: everything a process starts inherits its environment
(servers, workers, podman's monitors), also after its parent died and it was re-parented, so a mark finds
exactly what one test, run or session started, whatever else runs on the machine."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def new_mark(variable: str) -> tuple[str, str]:
    """A fresh `(variable, value)` pair to put in a process's environment."""
    return variable, uuid.uuid4().hex


def marked_processes(variable: str, value: str) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every other live process whose environment has variable=value."""
    mark = f"{variable}={value}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if state == "Z":
                continue  # exited; only waiting to be reaped by whoever adopted it
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (int(parent), command)
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found
