"""A multi-host training job as processes on this machine: one `python -m sagemaker_contract train` per host,
each with its own /opt/ml tree and resourceconfig.json, as SageMaker lays them out on separate instances.

The hosts are loopback addresses (`127.0.0.1`, `127.0.0.2`, ...: Linux routes all of 127/8 to lo), so they
resolve and reach each other without containers; tests/container/test_multihost_image.py does the same with
the real image on a private container network and SageMaker's `algo-N` names. Used by the fast tests and by
bench/multihost.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.container.conftest import ROOT, make_opt_ml

CONTAINER = ROOT / "container"
# Several hosts share this machine's cores: OpenMP's spinning waits would starve the other hosts' threads
# (measured: 1,000 rows x 30 rounds took 12 s instead of 0.1 s with 2 hosts x 2 threads on 2 cores).
SHARED_CORES_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free (the rendezvous and the model's tracker). Below the kernel's
    ephemeral range (32768 and up): a port picked there can be taken by any outgoing connection on the
    machine before the leader binds it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Host:
    name: str
    opt_ml: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    code: int | None = None
    max_rss_kb: int = 0  # peak resident memory of the host's training process (wait4)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def failure(self) -> str | None:
        path = self.opt_ml / "output" / "failure"
        return path.read_text() if path.exists() else None

    @property
    def model_files(self) -> list[str]:
        return sorted(p.name for p in (self.opt_ml / "model").iterdir())

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.code is None:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                self.process.returncode = self.code
                self.max_rss_kb = usage.ru_maxrss
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"host {self.name} did not finish in {timeout:.0f} s:\n{self.log[-3000:]}")
            time.sleep(0.05)
        return self.code

    def wait_for_line(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"host {self.name} never logged {text!r}:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the host's training process only (what the OOM killer or a spot reclaim does)."""
        self.process.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        """End the host's whole process group (its tracker child too); nothing outlives a test."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.code is None:
            self.process.wait()


def start_hosts(
    root: Path,
    count: int,
    hyperparameters: dict[str, str] | None = None,
    train: list[Path] | Path | None = None,
    validation: Path | None = None,
    distribution: str | None = None,
    env: dict[str, str] | None = None,
    keep: bool = False,
) -> list[Host]:
    """Start `count` hosts. `train`: one folder for every host (FullyReplicated, as SageMaker copies every
    file to every host), or one per host (ShardedByS3Key: what SageMaker gives each); None: the sample.
    `keep`: reuse each host's existing /opt/ml tree (its checkpoints), as a restarted spot job does."""
    names = [f"127.0.0.{i + 1}" for i in range(count)]
    port = free_port_pair()
    hosts = []
    for i, name in enumerate(names):
        opt = root / name
        if not keep:
            source = train[i] if isinstance(train, list) else train
            make_opt_ml(opt, hyperparameters, {"train": source, "validation": validation})
        config = opt / "input" / "config"
        (config / "resourceconfig.json").write_text(
            json.dumps({"current_host": name, "hosts": names, "network_interface_name": "lo"})
        )
        channels = json.loads((config / "inputdataconfig.json").read_text())
        if distribution:
            channels["train"]["S3DistributionType"] = distribution
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
        if keep:  # a restarted job: new settings, empty model and output folders, the same checkpoints
            if hyperparameters is not None:
                (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
            for child in [*(opt / "model").iterdir(), *(opt / "output").glob("failure")]:
                child.unlink()
        log_path = root / f"{name}.log"
        process_env = {
            **os.environ,
            **SHARED_CORES_ENV,
            "OPT_ML_DIR": str(opt),
            "MLPIPE_CLUSTER_PORT": str(port),
            "PYTHONPATH": f"{CONTAINER}{os.pathsep}{ROOT}",
            **(env or {}),
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sagemaker_contract", "train"],
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                start_new_session=True,  # its own process group: stop() ends the tracker child too
            )
        hosts.append(Host(name, opt, process, log_path))
    return hosts


def run_hosts(root: Path, count: int, **kwargs: object) -> list[Host]:
    hosts = start_hosts(root, count, **kwargs)  # type: ignore[arg-type]
    try:
        for host in hosts:
            host.wait()
    finally:
        for host in hosts:
            host.stop()
    return hosts
