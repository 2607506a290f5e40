"""Build and run the training image with docker (when an engine runs) or rootful podman.

Shared by the local run, tests/container and bench/. `ensure_ready()` runs
scripts/setup-container-tool.sh once per process (idempotent and fast when already set up).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mlpipe.local.net import free_port
from mlpipe.project import CONTAINER_DIR, SETUP_CONTAINER_TOOL
from stacks.model import build_context_args

DEFAULT_BASE_IMAGE = "public.ecr.aws/docker/library/python:3.11-slim"

_lock = threading.Lock()
_engine: str | None = None


class ContainerToolError(RuntimeError):
    """A container build or run failed; the message carries the relevant log tail."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_ready() -> None:
    """Run the setup script once per process (docker: a no-op check; podman: install/configure/base image)."""
    engine()


def engine() -> str:
    """'docker' or 'podman', after making sure it works. Raises ContainerToolError if neither does."""
    global _engine
    with _lock:
        if _engine is None:
            if not SETUP_CONTAINER_TOOL.exists():
                raise ContainerToolError(f"{SETUP_CONTAINER_TOOL} is missing")
            result = subprocess.run(
                ["bash", str(SETUP_CONTAINER_TOOL)], capture_output=True, text=True, check=False
            )
            name = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
            if result.returncode != 0 or name not in ("docker", "podman") or not shutil.which(name):
                raise ContainerToolError(
                    "No container engine: neither a running Docker engine nor rootful podman could be set up "
                    f"(scripts/setup-container-tool.sh exited {result.returncode}).\n{_tail(result.stderr)}"
                )
            _engine = name
        return _engine


def _run(args: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([engine(), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ContainerToolError(
            f"{engine()} {' '.join(args[:3])} failed:\n{_tail(result.stderr or result.stdout)}"
        )
    return result


def build_image(
    tag: str, context: Path = CONTAINER_DIR, base_image: str | None = None, model_dir: Path | None = None
) -> str:
    """Build `context` (its Dockerfile) as `tag`; returns the image id. Never pulls on podman (local base).

    `model_dir` replaces the Dockerfile's `model` stage with that folder, with the same arguments the
    CodeBuild buildspec passes (`stacks.model.build_context_args`)."""
    args = ["build", "-t", tag]
    if base_image:
        args += ["--build-arg", f"BASE_IMAGE={base_image}"]
    if model_dir is not None:
        args += build_context_args(str(model_dir))
    if engine() == "podman":
        args += ["--pull=never", "--layers"]
    args.append(str(context))
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    result = subprocess.run(
        [engine(), *args], capture_output=True, text=True, timeout=1800, env=env, check=False
    )
    if result.returncode != 0:
        raise ContainerToolError(
            f"Building {tag} from {context} failed:\n{_tail(result.stdout + result.stderr, 60)}"
        )
    image_id = _run(["image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip()
    return image_id


def image_size_bytes(image: str) -> int:
    return int(_run(["image", "inspect", "--format", "{{.Size}}", image]).stdout.strip())


def start_training_container(
    image: str,
    opt_ml: Path,
    name: str,
    log_file: Path,
    *,
    network: str | None = None,
    hostname: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`<engine> run --name <name> --network none -v <opt_ml>:/opt/ml <image> train`, logs to log_file.

    The caller polls the process, then reads opt_ml/model and opt_ml/output/failure. The container runs as
    root (SageMaker's /opt/ml is root-owned) and writes its files world-readable (umask 022, model 0644).
    One host of a multi-host job: `network` (a private network from `create_network`) and `hostname`
    (`algo-1`, ...: the name the other hosts resolve, as in SageMaker) replace `--network none`.
    """
    ensure_ready()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    where = ["--network", "none"]
    if network is not None:
        where = ["--network", network, "--hostname", hostname or name, "--network-alias", hostname or name]
    variables = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    with log_file.open("wb") as log:
        return subprocess.Popen(
            [engine(), "run", "--init", "--name", name, *where, *variables,
             "-v", f"{opt_ml.resolve()}:/opt/ml", image, "train"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip


def create_network(name: str) -> None:
    """A private bridge network for one multi-host job: the hosts resolve each other by name (the engine's
    DNS), and `--internal` keeps them off every other network, as `--network none` does for one host."""
    ensure_ready()
    remove_network(name)  # a network left by an interrupted run
    _run(["network", "create", "--internal", name])


def remove_network(name: str) -> None:
    result = _run(
        ["network", "rm", "-f", name] if engine() == "podman" else ["network", "rm", name], check=False
    )
    said = (result.stderr + result.stdout).lower()
    if result.returncode != 0 and "no such network" not in said and "not found" not in said:
        raise ContainerToolError(f"removing network {name} failed: {_tail(result.stderr)}")


def list_networks(prefix: str = "") -> list[str]:
    names = _run(["network", "ls", "--format", "{{.Name}}"]).stdout.split()
    return [n for n in names if n.startswith(prefix)]


def kill_container(name: str, signal: str = "KILL") -> None:
    """Send `signal` to the container's processes (SIGKILL: what a spot reclaim or the OOM killer does)."""
    _run(["kill", "--signal", signal, name], check=False)


def remove_container(name: str) -> None:
    """Force-remove a container (stops it first); a missing container is fine."""
    result = _run(["rm", "-f", "-t", "5", name] if engine() == "podman" else ["rm", "-f", name], check=False)
    if result.returncode != 0 and "no such container" not in result.stderr.lower():
        raise ContainerToolError(f"removing container {name} failed: {_tail(result.stderr)}")


def list_containers(prefix: str = "") -> list[str]:
    names = _run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    return [n for n in names if n.startswith(prefix)]


def _ping(port: int) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/ping")
        status = connection.getresponse().status
        connection.close()
        return status
    except (OSError, http.client.HTTPException):
        return None


def container_logs(name: str) -> str:
    result = _run(["logs", name], check=False)
    return result.stdout + result.stderr


@contextlib.contextmanager
def serve(
    image: str,
    model_dir: Path,
    *,
    port: int | None = None,
    workers: int | None = None,
    name: str | None = None,
    startup_timeout: float = 60,
) -> Iterator[str]:
    """Run `<image> serve` with the model mounted read-only; yields `http://127.0.0.1:<port>` once /ping is 200.

    On exit (also on an exception or Ctrl-C) the container gets SIGTERM (`stop -t 10`) and is removed.
    """
    ensure_ready()
    port = port or free_port()
    name = name or f"local-serve-{os.getpid()}-{port}"
    args = ["run", "-d", "--init", "--name", name, "-p", f"127.0.0.1:{port}:8080",
            "-v", f"{model_dir.resolve()}:/opt/ml/model:ro"]  # fmt: skip
    if workers:
        args += ["-e", f"SAGEMAKER_MODEL_SERVER_WORKERS={workers}"]
    _run([*args, image, "serve"], timeout=120)
    try:
        deadline = time.monotonic() + startup_timeout
        status = None
        while time.monotonic() < deadline:
            status = _ping(port)
            if status == 200:
                break
            state = _run(["inspect", "--format", "{{.State.Running}}", name], check=False).stdout.strip()
            if state == "false":
                raise ContainerToolError(
                    f"The serve container {name} exited during start-up:\n{_tail(container_logs(name))}"
                )
            time.sleep(0.2)
        else:
            raise ContainerToolError(
                f"The serve container {name} did not answer /ping with 200 within {startup_timeout:.0f} s "
                f"(last status {status}):\n{_tail(container_logs(name))}"
            )
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            _run(["stop", "-t", "10", name], timeout=30, check=False)
        with contextlib.suppress(Exception):
            remove_container(name)
