"""XGBoost's own collective across the job's hosts: the tracker on the leader, every host a worker.

The contract says which host this is (`Cluster`); this module only runs XGBoost's collective, as SageMaker's
XGBoost container does (`distributed.py` there): a `RabitTracker` on the first host of the sorted hosts, and
`collective.init` on every host with the tracker's address and the host's rank as its task id (`sortby=task`),
so XGBoost's ranks are the contract's.

Why the tracker runs in a child process: it is a native thread, and a C++ exception in it (a worker that
disconnects during start-up) calls std::terminate, which would kill the leader without a failure reason.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator

from sagemaker_contract.cluster import Cluster
from sagemaker_contract.errors import UserError
from xgboost import collective

TRACKER_START_SECONDS = 60


def tracker_port(cluster: Cluster) -> int:
    return cluster.port + 1  # the contract's rendezvous listens on cluster.port


@contextlib.contextmanager
def communicator(cluster: Cluster) -> Iterator[None]:
    """XGBoost's collective on every host while the block runs; one host: nothing to set up."""
    if not cluster.distributed:
        yield
        return
    port = tracker_port(cluster)
    tracker = _start_tracker(cluster, port) if cluster.is_leader else None
    try:
        cluster.barrier()  # every host connects only once the leader's tracker listens
        collective.init(
            dmlc_communicator="rabit",
            dmlc_tracker_uri=cluster.leader_address,
            dmlc_tracker_port=port,
            dmlc_task_id=str(cluster.rank),
        )
        if collective.get_rank() != cluster.rank or collective.get_world_size() != cluster.world_size:
            raise UserError(
                f"XGBoost's collective gave host {cluster.current_host} rank {collective.get_rank()} of "
                f"{collective.get_world_size()}, not {cluster.rank} of {cluster.world_size}."
            )
        print(
            f"xgboost collective: rank {cluster.rank} of {cluster.world_size}, tracker "
            f"{cluster.leader}:{port}",
            file=sys.stderr,
            flush=True,
        )
        yield
        # Only after success: finalize waits for every peer, which a failed collective never answers.
        collective.finalize()
        if tracker is not None:
            tracker.wait(timeout=TRACKER_START_SECONDS)
    finally:
        if tracker is not None and tracker.poll() is None:
            tracker.kill()
            tracker.wait()


def _start_tracker(cluster: Cluster, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", f"{__package__}.tracker", cluster.leader_address, str(port),
         str(cluster.world_size), str(int(cluster.timeout))],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()  # "ready" once it listens
    if line.strip() != "ready":
        process.kill()
        raise UserError(
            f"XGBoost's tracker did not start on {cluster.leader} port {port} (the leader's log has the reason)."
        )
    return process


def summary(error: Exception) -> str:
    """What an XGBoostError says, without timestamps, source positions and the backtrace: its "- [file:line|
    time]: message" lines (a collective's chain of causes), else its first line."""
    text = str(error)
    causes = [m.strip() for m in re.findall(r"^- \[[^\]]*\]:\s*(.+)$", text, flags=re.MULTILINE)]
    if causes:
        return "; ".join(dict.fromkeys(causes))[:400]
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return re.sub(r"^\[[\d:]+\] [^ ]+:\d+: ", "", first)[:400]
