"""Several hosts in one training job: which host this is, which rows it reads, and how hosts agree.

SageMaker starts one container per instance, each with its own `/opt/ml`, and tells it the job's layout in
`resourceconfig.json` (`current_host`, `hosts`, `network_interface_name`). The contract owns everything a
model should not have to know about that:

- **who is who** (`Cluster`): hosts sorted by name, as SageMaker's built-in algorithm containers sort them; the first
  is the leader (rank 0). Only the leader writes the model, the metric lines, and the failure file of a
  failure that another host caused.
- **which rows** (`plan_files`, `row_window`): with `ShardedByS3Key` SageMaker has already given each host
  its own files. With `FullyReplicated` every host has every file, and takes a deterministic part: files by
  sorted name, round-robin, when there are at least as many files as hosts; otherwise a contiguous range of
  rows (every host parses the whole file then, and keeps its range).
- **agreeing** (`Exchange`): a small rendezvous on the leader (newline-delimited JSON over one TCP connection
  per host) that gathers facts from every host (column kinds, text categories, class labels, row counts,
  checkpoint rounds) so that every host encodes its shard the same way, and that carries a host's failure
  reason to the leader. It is model-agnostic; the model's own collective (a tracker on the leader, say) runs beside it.

Why a rendezvous of our own: a host that dies mid-training closes its connection without a word, and a host
that fails with a reason sends it first, so the leader can name the host that failed. A model's native collective
may only report "Ring Allreduce failed" without saying which peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sagemaker_contract.errors import UserError

DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
PORT_ENV = "MLPIPE_CLUSTER_PORT"  # the rendezvous port; a model's collective may use the next ones
DEFAULT_PORT = 9097
TIMEOUT_ENV = "MLPIPE_CLUSTER_TIMEOUT"
# SageMaker starts a job's instances independently: one may pull the image minutes after another, and its
# DNS name may appear late (SageMaker's built-in algorithm containers retry name lookups for 15 minutes).
DEFAULT_TIMEOUT = 900.0
REPORT_WAIT = 10.0  # after a failed fit, how long the leader waits for each host's report
WATCH_GRACE = 15.0  # after a host's connection drops, how long the main thread has to fail on its own


class PeerFailure(Exception):
    """Another host failed (or vanished): the leader writes `reason` to its failure file, others only log it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Cluster:
    """This job's hosts as the contract hands them to a model (`fit_distributed`'s last argument)."""

    hosts: tuple[str, ...]
    current_host: str
    network_interface: str | None = None
    train_distribution: str = "FullyReplicated"
    port: int = DEFAULT_PORT
    timeout: float = DEFAULT_TIMEOUT
    shard: str = "all rows"  # this host's part of the train channel, for the log
    exchange: Exchange | None = field(default=None, repr=False, compare=False)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.leader

    @property
    def distributed(self) -> bool:
        return len(self.hosts) > 1

    @property
    def leader_address(self) -> str:
        """The leader's IP address (resolved once, when the hosts met)."""
        if self.exchange is None:
            return resolve(self.leader, self.timeout)
        return self.exchange.leader_address

    def allgather(self, value: Any) -> list[Any]:
        """Every host's `value` (JSON-serialisable), in rank order, on every host."""
        if self.exchange is None:
            return [value]
        return self.exchange.allgather(value)

    def broadcast(self, value: Any) -> Any:
        """The leader's `value` on every host."""
        return self.allgather(value if self.is_leader else None)[0]

    def barrier(self) -> None:
        self.allgather(None)


def single_host() -> Cluster:
    return Cluster(hosts=("algo-1",), current_host="algo-1")


def from_config(resources: dict[str, Any], input_config: dict[str, Any]) -> Cluster:
    """The cluster from resourceconfig.json and the train channel's S3DistributionType (inputdataconfig.json).

    No resource config (a local run without one) means one host. Raises UserError with a sentence."""
    hosts = resources.get("hosts") or []
    current = resources.get("current_host")
    if not hosts and current is None:
        cluster = single_host()
    else:
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise UserError(
                f"The resource configuration's 'hosts' must be a list of host names (got {hosts!r})."
            )
        if len(set(hosts)) != len(hosts):
            raise UserError(f"The resource configuration lists a host twice: {', '.join(hosts)}.")
        if current not in hosts:
            raise UserError(
                f"The resource configuration's current_host {current!r} is not one of its hosts "
                f"({', '.join(hosts)})."
            )
        cluster = Cluster(hosts=tuple(sorted(hosts)), current_host=current)
    interface = resources.get("network_interface_name")
    cluster.network_interface = interface if isinstance(interface, str) and interface else None
    distribution = (input_config.get("train") or {}).get("S3DistributionType") or "FullyReplicated"
    if distribution not in DISTRIBUTIONS:
        raise UserError(
            f"The train channel's S3DistributionType is {distribution!r}; this container reads "
            f"{' or '.join(DISTRIBUTIONS)}."
        )
    cluster.train_distribution = distribution
    cluster.port = _env_number(PORT_ENV, DEFAULT_PORT, int)
    cluster.timeout = _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT, float)
    return cluster


def _env_number(name: str, default: Any, kind: type) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise UserError(f"The environment variable {name} must be a number (got {raw!r}).") from None


# -- which rows ---------------------------------------------------------------------------------------------
def plan_files(file_count: int, world_size: int, rank: int, distribution: str) -> list[int] | None:
    """The indexes (into the channel's files sorted by name) this host reads, or None: every file, and a
    row range of them (`row_window`). ShardedByS3Key: SageMaker already gave each host its own files."""
    if distribution == "ShardedByS3Key" or world_size == 1:
        return list(range(file_count))
    if file_count >= world_size:
        return list(range(rank, file_count, world_size))
    return None


def row_window(total_rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """Host `rank`'s contiguous rows [start, stop) of `total_rows`: sizes differ by at most one. The last
    host's range is open-ended (a row count from line counts is an upper bound: blank lines)."""
    start = total_rows * rank // world_size
    stop = total_rows * (rank + 1) // world_size
    return start, (sys.maxsize if rank == world_size - 1 else stop)


def file_windows(row_counts: list[int], window: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(file index, first row, stop row) within each file for a window over the files' concatenated rows;
    files outside the window are left out. An empty window is an empty part of the first file (the host still
    knows the columns, and joins with no rows)."""
    start, stop = window
    parts = []
    offset = 0
    for index, rows in enumerate(row_counts):
        last = index == len(row_counts) - 1
        lo, hi = max(start - offset, 0), (stop - offset if last else min(stop - offset, rows))
        if hi > lo:
            parts.append((index, lo, hi))
        offset += rows
    return parts or [(0, 0, 0)]


def describe_files(indexes: list[int], total: int) -> str:
    shown = ", ".join(str(i + 1) for i in indexes[:8]) + (", ..." if len(indexes) > 8 else "")
    return f"{len(indexes)} of {total} files (numbers {shown} by name)"


# -- the rendezvous ----------------------------------------------------------------------------------------
def resolve(host: str, timeout: float) -> str:
    """The host's IPv4 address, retried: a SageMaker host's name may resolve only once its instance is up."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError as error:
            if time.monotonic() > deadline:
                raise UserError(
                    f"The host name {host} did not resolve within {timeout:.0f} s ({error}): the job's "
                    "hosts cannot reach each other."
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Closed(Exception):
    """The other end closed the connection."""


class _Connection:
    """One TCP connection carrying newline-delimited JSON."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.closed = ""  # why the stream ended, once it has
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def fill(self, timeout: float | None) -> None:
        """Read what has arrived into the buffer (without parsing it). Raises TimeoutError."""
        if self.closed:
            raise Closed(self.closed)
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            raise
        except OSError as error:  # reset by a peer that died
            self.closed = str(error) or "reset"
            raise Closed(self.closed) from None
        if not chunk:
            self.closed = "end of stream"
            raise Closed(self.closed)
        self.buffer += chunk

    def send(self, message: dict[str, Any]) -> None:
        self.sock.settimeout(60)
        self.sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message. Raises Closed at the end of the stream, TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            self.fill(left)
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Exchange:
    """The leader holds one connection per other host; a worker holds one connection to the leader.

    Messages: a worker's `hello` (its host name), `value` (its part of an allgather), `error` (a reason: it is
    failing), `report` (after a failed fit: its error's first line, and whether it is its own fault). The
    leader answers an allgather with `values`, or with `failed` (host -> reason) when any host failed.
    """

    def __init__(self, cluster: Cluster, leader_address: str) -> None:
        self.cluster = cluster
        self.leader_address = leader_address
        self.peers: dict[str, _Connection] = {}  # leader: host -> connection; worker: leader -> connection
        self.server: socket.socket | None = None

    @classmethod
    def connect(cls, cluster: Cluster, leader_address: str | None = None) -> Exchange:
        """Meet every host (the leader listens, the others connect), within the cluster's timeout."""
        address = leader_address or resolve(cluster.leader, cluster.timeout)
        exchange = cls(cluster, address)
        deadline = time.monotonic() + cluster.timeout
        if cluster.is_leader:
            exchange._accept_all(deadline)
        else:
            exchange._join(deadline)
        return exchange

    def _accept_all(self, deadline: float) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", self.cluster.port))
        server.listen(len(self.cluster.hosts))
        self.server = server
        expected = set(self.cluster.hosts) - {self.cluster.current_host}
        while expected - set(self.peers):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(sorted(expected - set(self.peers)))
                raise PeerFailure(
                    f"Distributed training could not start: host(s) {missing} did not join within "
                    f"{self.cluster.timeout:.0f} s (the hosts reach each other on TCP port {self.cluster.port})."
                )
            server.settimeout(left)
            try:
                sock, _ = server.accept()
            except TimeoutError:
                continue
            connection = _Connection(sock)
            try:
                hello = connection.receive(timeout=30)
            except (Closed, TimeoutError, ValueError):
                connection.close()
                continue
            host = hello.get("hello")
            if host not in expected or host in self.peers:
                connection.close()  # a stray or duplicate connection: not one of this job's hosts
                continue
            self.peers[host] = connection
        log(f"cluster: all {len(self.cluster.hosts)} hosts joined on port {self.cluster.port}")

    def _join(self, deadline: float) -> None:
        delay = 0.1
        while True:
            try:
                sock = socket.create_connection((self.leader_address, self.cluster.port), timeout=10)
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise PeerFailure(
                        f"Distributed training could not start: host {self.cluster.current_host} could not "
                        f"reach the leader {self.cluster.leader} ({self.leader_address}:{self.cluster.port}) "
                        f"within {self.cluster.timeout:.0f} s: {error}."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        connection = _Connection(sock)
        connection.send({"hello": self.cluster.current_host})
        self.peers[self.cluster.leader] = connection
        log(f"cluster: joined the leader {self.cluster.leader} ({self.leader_address})")

    def _workers(self) -> list[tuple[str, _Connection]]:
        return [(host, self.peers[host]) for host in self.cluster.hosts if host in self.peers]

    def allgather(self, value: Any) -> list[Any]:
        if not self.cluster.is_leader:
            leader = self.peers[self.cluster.leader]
            try:
                leader.send({"value": value})
                answer = leader.receive()
            except (Closed, OSError):
                raise PeerFailure(self._lost_leader()) from None
            if "failed" in answer:
                raise PeerFailure(failure_sentence(answer["failed"], {}))
            return answer["values"]
        values: list[Any] = []
        failed: dict[str, str] = {}
        lost: dict[str, str] = {}
        for host in self.cluster.hosts:
            if host == self.cluster.current_host:
                values.append(value)
                continue
            try:
                message = self.peers[host].receive()
            except Closed as error:
                lost[host] = str(error)
                values.append(None)
                continue
            if "error" in message:
                failed[host] = str(message["error"])
            values.append(message.get("value"))
        if failed or lost:
            self._tell_all({"failed": {**failed, **{h: LOST for h in lost}}})
            raise PeerFailure(failure_sentence(failed, lost))
        self._tell_all({"values": values})
        return values

    def _tell_all(self, message: dict[str, Any]) -> None:
        for _, connection in self._workers():
            with contextlib.suppress(OSError):
                connection.send(message)

    def _lost_leader(self) -> str:
        return (
            f"Host {self.cluster.current_host} lost its connection to the leader {self.cluster.leader}: "
            "the leader's log and failure file have the reason."
        )

    def abort(self, reason: str) -> None:
        """This host is failing before or between allgathers: tell whoever may be waiting for it."""
        if self.cluster.is_leader:
            self._tell_all({"failed": {self.cluster.current_host: reason}})
        else:
            with contextlib.suppress(OSError, KeyError):
                self.peers[self.cluster.leader].send({"error": reason})

    def report(self, text: str, own: bool) -> None:
        """A worker's fit failed: its first line, and whether the failure is its own (bad data in its shard)
        or a consequence (the collective broke because another host went away)."""
        with contextlib.suppress(OSError, KeyError):
            self.peers[self.cluster.leader].send({"report": text, "own": own})

    def reports(self, wait: float = REPORT_WAIT) -> tuple[dict[str, str], dict[str, str]]:
        """The leader, after a failed fit: (hosts that failed with their own reason, hosts that vanished).

        A host that died closed its connection without a word (a SIGKILL, the OOM killer, a lost instance);
        a host whose collective broke because of another one reports that and is neither."""
        failed: dict[str, str] = {}
        lost: dict[str, str] = {}
        deadline = time.monotonic() + wait
        for host, connection in self._workers():
            try:
                message = connection.receive(timeout=max(deadline - time.monotonic(), 0.05))
            except Closed as error:
                lost[host] = str(error)
                continue
            except TimeoutError:
                continue
            if message.get("own") or "error" in message:
                failed[host] = str(message.get("report") or message.get("error"))
        return failed, lost

    def done(self) -> None:
        """A worker's fit succeeded: its connection closing next is a clean shutdown, not a failure."""
        with contextlib.suppress(OSError, KeyError):
            self.peers[self.cluster.leader].send({"done": True})

    def watch(self, on_failure: Callable[[str], None], grace: float = WATCH_GRACE) -> Watch:
        """Watch the connections while the model trains (see Watch)."""
        return Watch(self, on_failure, grace)

    def close(self) -> None:
        for connection in self.peers.values():
            connection.close()
        self.peers.clear()
        if self.server is not None:
            with contextlib.suppress(OSError):
                self.server.close()
            self.server = None


class Watch:
    """A thread that watches the rendezvous connections while the model's collective trains.

    A native collective may hang when a peer dies (measured here: with three hosts, one killed, the others
    sometimes waited in an allreduce for minutes). Every host's connection to the leader stays open during
    training, so a host that dies is seen at once: its connection closes. Then the main thread gets `grace`
    seconds to fail on its own (its error path stops the watch and names the host); if it has not, the watch
    calls `on_failure` with the sentence (the caller writes it and ends the process). A worker's `done`
    message before it closes is a clean shutdown."""

    def __init__(self, exchange: Exchange, on_failure: Callable[[str], None], grace: float) -> None:
        self.exchange = exchange
        self.on_failure = on_failure
        self.grace = grace
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="cluster-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        watching = dict(self.exchange.peers)
        while watching and not self.stopped.is_set():
            sockets = {connection.sock: host for host, connection in watching.items()}
            try:
                readable, _, _ = select.select(list(sockets), [], [], 0.5)
            except (OSError, ValueError):
                return  # the connections were closed: the exchange is over
            trouble = False
            for sock in readable:
                host = sockets[sock]
                # Peek, never consume: the main thread may be reading an allgather on this connection.
                try:
                    head = sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    head = b""  # reset by a host that died
                if head.startswith(b'{"done"'):
                    with self.lock, contextlib.suppress(Closed, TimeoutError, ValueError):
                        watching[host].receive(timeout=1)
                    del watching[host]  # finished cleanly; its end of stream is expected
                elif not head or head.startswith((b'{"report"', b'{"error"')):
                    trouble = True
            if trouble:
                break
            if readable:
                time.sleep(0.1)  # an allgather's data waits for the main thread: no busy loop
        if self.stopped.is_set() or not watching or self.stopped.wait(self.grace):
            return
        with self.lock:
            if self.stopped.is_set():
                return
            if self.exchange.cluster.is_leader:
                failed, lost = self.exchange.reports(wait=2)
                reason = failure_sentence(failed, lost, "" if failed or lost else "a host stopped answering")
            else:
                reason = self.exchange._lost_leader()
            self.on_failure(reason)

    def stop(self) -> None:
        """The main thread takes over (its fit returned or failed); waits while the watch is reporting."""
        self.stopped.set()
        with self.lock:
            pass
        self.thread.join(timeout=5)


LOST = "its training process ended without a reason (killed: out of memory, a stopped container, or a lost instance)"


def failure_sentence(failed: dict[str, str], lost: dict[str, str], detail: str = "") -> str:
    """One paragraph naming the host(s) that failed, each with its reason."""
    parts = [f"host {host} failed: {reason.rstrip('.')}" for host, reason in sorted(failed.items())]
    parts += [f"host {host} stopped: {LOST}" for host in sorted(lost) if host not in failed]
    text = "Distributed training failed: " + "; ".join(parts) + "."
    if detail:
        text += f" The collective on the leader reported: {detail.rstrip('.')}."
    return text + " No model was written."
