"""Several hosts, without a model: who is who, which rows each host reads, the rendezvous, the seam."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sagemaker_contract import cluster as clusters
from sagemaker_contract import sharding
from sagemaker_contract.cluster import Cluster, Exchange, PeerFailure
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset
from sagemaker_contract.tasks import Target

from tests.container.conftest import TrainResult, make_opt_ml
from tests.container.hosts import free_port_pair


# -- who is who --------------------------------------------------------------------------------------------
def test_hosts_are_sorted_and_the_first_leads() -> None:
    resources = {
        "current_host": "algo-2",
        "hosts": ["algo-3", "algo-1", "algo-2"],
        "network_interface_name": "eth0",
    }
    cluster = clusters.from_config(resources, {"train": {"S3DistributionType": "ShardedByS3Key"}})
    assert cluster.hosts == ("algo-1", "algo-2", "algo-3")
    assert (cluster.rank, cluster.world_size, cluster.leader) == (1, 3, "algo-1")
    assert not cluster.is_leader and cluster.distributed
    assert cluster.network_interface == "eth0" and cluster.train_distribution == "ShardedByS3Key"


def test_no_resource_config_is_one_host() -> None:
    cluster = clusters.from_config({}, {})
    assert cluster.world_size == 1 and cluster.is_leader and not cluster.distributed
    assert cluster.train_distribution == "FullyReplicated"
    assert cluster.allgather({"a": 1}) == [{"a": 1}] and cluster.broadcast(3) == 3


@pytest.mark.parametrize(
    ("resources", "channels", "message"),
    [
        (
            {"current_host": "algo-9", "hosts": ["algo-1"]},
            {},
            "current_host 'algo-9' is not one of its hosts",
        ),
        ({"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}, {}, "lists a host twice"),
        ({"current_host": "algo-1", "hosts": "algo-1"}, {}, "must be a list of host names"),
        (
            {"current_host": "algo-1", "hosts": ["algo-1"]},
            {"train": {"S3DistributionType": "Sharded"}},
            "reads FullyReplicated or ShardedByS3Key",
        ),
    ],
)
def test_a_bad_resource_config_is_one_sentence(
    resources: dict[str, Any], channels: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        clusters.from_config(resources, channels)


# -- which rows --------------------------------------------------------------------------------------------
def test_files_round_robin_by_name_when_there_are_enough() -> None:
    assert clusters.plan_files(5, 2, 0, "FullyReplicated") == [0, 2, 4]
    assert clusters.plan_files(5, 2, 1, "FullyReplicated") == [1, 3]
    assert clusters.plan_files(3, 3, 2, "FullyReplicated") == [2]
    assert clusters.plan_files(2, 3, 0, "FullyReplicated") is None  # fewer files than hosts: row ranges
    assert clusters.plan_files(2, 3, 1, "ShardedByS3Key") == [0, 1]  # SageMaker already chose the files
    assert clusters.plan_files(4, 1, 0, "FullyReplicated") == [0, 1, 2, 3]


@pytest.mark.parametrize(("rows", "hosts"), [(1000, 2), (1001, 3), (7, 4), (2, 3), (0, 2), (5, 5)])
def test_row_windows_cover_every_row_once_and_differ_by_one_at_most(rows: int, hosts: int) -> None:
    windows = [clusters.row_window(rows, hosts, rank) for rank in range(hosts)]
    taken = [row for start, stop in windows for row in range(start, min(stop, rows))]
    assert taken == list(range(rows))
    sizes = [min(stop, rows) - start for start, stop in windows]
    assert max(sizes) - min(sizes) <= 1
    assert windows[-1][1] > rows  # the last host reads to the end (line counts are an upper bound)


def test_a_window_spans_files_and_an_empty_one_still_names_a_file() -> None:
    assert clusters.file_windows([10, 5], (8, 12)) == [(0, 8, 10), (1, 0, 2)]
    assert clusters.file_windows([10, 5], (12, 2**62)) == [(1, 2, 2**62 - 10)]
    assert clusters.file_windows([10, 5], (3, 3)) == [(0, 0, 0)]


def _sharded_rows(tmp_path: Path, hosts: int, files: int, rows_per_file: int) -> list[list[float]]:
    """Each host's target values when `files` CSV files are shared by `hosts` hosts (FullyReplicated)."""
    from sagemaker_contract import data

    directory = tmp_path / "train"
    directory.mkdir()
    value = 0
    for f in range(files):
        lines = ["y,x"] + [f"{value + i},{i}" for i in range(rows_per_file)]
        value += rows_per_file
        (directory / f"part-{f:03d}.csv").write_text("\n".join(lines) + "\n")
    shares = []
    for rank in range(hosts):
        cluster = Cluster(hosts=tuple(f"h{i}" for i in range(hosts)), current_host=f"h{rank}")
        cluster.allgather = lambda value, n=hosts: [value] * n  # type: ignore[method-assign]
        layout = sharding.train_layout(directory, cluster, None)
        columns = data.plan_columns(layout, "y")
        dataset, _ = data.read_channel(layout, columns, allow_empty=True)
        shares.append(sorted(dataset.y.tolist()))
    return shares


@pytest.mark.parametrize(("hosts", "files", "rows"), [(2, 5, 7), (3, 1, 10), (3, 2, 1), (4, 1, 2)])
def test_fully_replicated_shares_are_disjoint_and_complete(
    tmp_path: Path, hosts: int, files: int, rows: int
) -> None:
    shares = _sharded_rows(tmp_path, hosts, files, rows)
    every = sorted(v for share in shares for v in share)
    assert every == [float(v) for v in range(files * rows)]
    if files < hosts and files * rows < hosts:
        assert [] in shares  # more hosts than rows: a host joins with none


def test_sharded_by_s3_key_with_a_host_without_files_is_a_sentence(tmp_path: Path) -> None:
    directory = tmp_path / "train"
    directory.mkdir()
    cluster = Cluster(hosts=("algo-1", "algo-2", "algo-3"), current_host="algo-3")
    cluster.train_distribution = "ShardedByS3Key"
    cluster.allgather = lambda value: [1, 1, 0]  # type: ignore[method-assign]
    with pytest.raises(UserError, match=r"^3 hosts but only 2 training files under the train prefix.*algo-3"):
        sharding.train_layout(directory, cluster, None)


def test_hosts_agree_on_categories_and_labels() -> None:
    """A category or class that only one host has gets the same code on every host."""
    cluster = Cluster(hosts=("a", "b"), current_host="b")
    # host b saw colours {green, red} (codes 0, 1) and labels {no, yes}; host a saw {blue, red} and {maybe, no}
    mine = Dataset(
        x=np.array([[0.0], [1.0], [np.nan]], dtype=np.float32),
        y=np.array([1.0, 0.0, 1.0], dtype=np.float32),
        feature_names=["colour"],
        target_name="answer",
        categories={"colour": ["green", "red"]},
    )
    theirs = {"rows": 5, "categories": {"colour": ["blue", "red"]}, "labels": ["maybe", "no"], "values": []}
    cluster.allgather = lambda value: [{**theirs, "more_values": False}, value]  # type: ignore[method-assign]
    target, _, facts = sharding.agree_encoding(cluster, mine, Target("categorical", ["no", "yes"]))
    assert mine.categories["colour"] == ["blue", "green", "red"]
    assert mine.x[:2, 0].tolist() == [1.0, 2.0] and np.isnan(mine.x[2, 0])
    assert target.categories == ["maybe", "no", "yes"] and mine.y.tolist() == [2.0, 1.0, 2.0]
    assert facts["rows"] == [5, 3]


# -- the rendezvous ----------------------------------------------------------------------------------------
def _cluster_threads(count: int, work: Callable[[Cluster], Any], timeout: float = 20) -> dict[str, Any]:
    """Run `work(cluster)` on `count` hosts (threads on loopback); host -> its result or exception."""
    port = free_port_pair()
    names = tuple(f"h{i}" for i in range(count))
    results: dict[str, Any] = {}

    def host(name: str) -> None:
        cluster = Cluster(hosts=names, current_host=name, port=port, timeout=timeout)
        try:
            cluster.exchange = Exchange.connect(cluster, leader_address="127.0.0.1")
            results[name] = work(cluster)
        except Exception as error:
            results[name] = error
        finally:
            if cluster.exchange is not None:
                cluster.exchange.close()

    threads = [threading.Thread(target=host, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return results


def test_allgather_and_broadcast_across_three_hosts() -> None:
    def work(cluster: Cluster) -> Any:
        everyone = cluster.allgather({"rank": cluster.rank})
        return everyone, cluster.broadcast(f"from {cluster.current_host}")

    results = _cluster_threads(3, work)
    for name in ("h0", "h1", "h2"):
        assert results[name] == ([{"rank": 0}, {"rank": 1}, {"rank": 2}], "from h0")


def test_a_host_that_fails_is_named_on_the_leader() -> None:
    def work(cluster: Cluster) -> Any:
        if cluster.current_host == "h2":
            assert cluster.exchange is not None
            cluster.exchange.abort("The target column 'price' has 3 missing value(s).")
            return "aborted"
        return cluster.allgather(1)

    results = _cluster_threads(3, work)
    assert isinstance(results["h0"], PeerFailure) and isinstance(results["h1"], PeerFailure)
    assert results["h0"].reason.startswith("Distributed training failed: host h2 failed: The target column")


def test_a_host_that_vanishes_is_named_and_a_survivor_is_not() -> None:
    """After a failed fit the leader reads each host's report: a dead host closed its connection without one."""

    def work(cluster: Cluster) -> Any:
        assert cluster.exchange is not None
        cluster.barrier()
        if cluster.current_host == "h1":
            cluster.exchange.close()  # the kernel closes a killed process's sockets
            return "died"
        if cluster.current_host == "h2":
            cluster.exchange.report("Ring Allreduce failed.", own=False)
            return "survived"
        return cluster.exchange.reports(wait=5)

    results = _cluster_threads(3, work)
    failed, lost = results["h0"]
    assert failed == {} and set(lost) == {"h1"}
    sentence = clusters.failure_sentence(failed, lost, "Ring Allreduce failed")
    assert "host h1 stopped: its training process ended without a reason" in sentence and "h2" not in sentence


def test_a_host_that_never_joins_is_named_after_the_timeout() -> None:
    port = free_port_pair()
    cluster = Cluster(hosts=("h0", "h1"), current_host="h0", port=port, timeout=1)
    with pytest.raises(PeerFailure, match="host\\(s\\) h1 did not join within 1 s"):
        Exchange.connect(cluster, leader_address="127.0.0.1")


# -- the seam ------------------------------------------------------------------------------------------------
def test_a_model_without_fit_distributed_fails_a_multi_host_job_with_a_sentence(
    tmp_path: Path, run_train: Callable[[Path], TrainResult]
) -> None:
    opt = make_opt_ml(tmp_path / "ml")
    (opt / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]})
    )
    result = run_train(opt)
    assert result.exit_code == 1 and result.model_files == []
    assert result.failure is not None
    assert "This job has 2 hosts, but the model module 'tests.container.fake_model'" in result.failure
    assert "trains on one host only: it has no fit_distributed()" in result.failure
