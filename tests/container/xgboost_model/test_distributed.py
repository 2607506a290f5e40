"""The default model on several hosts, as processes on loopback addresses (tests/container/hosts.py): one model
across hosts with XGBoost's collective, the leader alone writing, failures named, checkpoints per host.

The real image on a private container network is tests/container/test_multihost_image.py.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.container.conftest import METRIC_RE, SAMPLE
from tests.container.hosts import Host, run_hosts, start_hosts

# One thread per host: several hosts share this machine's cores.
PARAMS = {"num_round": "30", "nthread": "1", "early_stopping_rounds": "0"}
# Distributed `hist` merges every host's quantile sketch: the bins, so the trees, may differ a little
# from one host's exact sketch. Stated tolerance: validation RMSE within 2% of the one-host model's.
RMSE_TOLERANCE = 0.02


def metrics(log: str) -> dict[tuple[str, str], float]:
    return {(c, n): float(v) for c, n, v in re.findall(METRIC_RE, log, flags=re.MULTILINE)}


def split_sample(directory: Path, parts: int) -> Path:
    """The sample's train file as `parts` CSV files (each with the header), named part-000.csv, ..."""
    lines = (SAMPLE / "train" / "train.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    directory.mkdir(parents=True)
    for k in range(parts):
        (directory / f"part-{k:03d}.csv").write_text("\n".join([header, *rows[k::parts]]) + "\n")
    return directory


@pytest.fixture(scope="module")
def one_host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    [host] = run_hosts(tmp_path_factory.mktemp("one"), 1, hyperparameters=PARAMS)
    assert host.code == 0, host.log[-3000:]
    return host


@pytest.mark.parametrize("files", [1, 3], ids=["row-ranges", "files-round-robin"])
def test_two_hosts_train_one_model_written_by_the_leader(one_host: Host, tmp_path: Path, files: int) -> None:
    train = split_sample(tmp_path / "train", files) if files > 1 else None
    leader, worker = run_hosts(tmp_path, 2, hyperparameters=PARAMS, train=train)
    assert (leader.code, worker.code) == (0, 0), leader.log[-2000:] + worker.log[-2000:]
    assert leader.model_files == ["model-meta.json", "xgboost-meta.json", "xgboost-model.ubj"]
    assert worker.model_files == [] and leader.failure is None and worker.failure is None
    assert "METRIC" not in worker.log and "the leader 127.0.0.1 writes the model" in worker.log
    expected = "rows 0 to 1,000 of 1 file(s)" if files == 1 else "2 of 3 files (numbers 1, 3 by name)"
    assert f"train data on this host: {expected}" in leader.log
    meta = json.loads((leader.opt_ml / "model" / "model-meta.json").read_text())
    assert meta["hosts"] == 2 and meta["rows"]["train"] == 2000 and meta["model"]["num_round"] == 30
    ours, single = metrics(leader.log), metrics(one_host.log)
    assert ours[("validation", "rmse")] == pytest.approx(single[("validation", "rmse")], rel=RMSE_TOLERANCE)
    for host in (leader, worker):  # one checkpoint folder per host
        assert sorted(p.name for p in (host.opt_ml / "checkpoints" / host.name).iterdir()) == [
            "checkpoint-20.ubj",
            "checkpoint-30.ubj",
            "checkpoint-meta.json",
        ]


def test_more_hosts_than_rows_a_host_joins_with_none(tmp_path: Path) -> None:
    train = tmp_path / "tiny"
    train.mkdir()
    rows = (SAMPLE / "train" / "train.csv").read_text().splitlines()[:3]  # header + 2 rows
    (train / "tiny.csv").write_text("\n".join(rows) + "\n")
    hosts = run_hosts(
        tmp_path, 3, hyperparameters={**PARAMS, "num_round": "3", "problem_type": "regression"}, train=train
    )
    assert [h.code for h in hosts] == [0, 0, 0], hosts[0].log[-3000:]
    assert "train rows per host: {'127.0.0.1': 0, '127.0.0.2': 1, '127.0.0.3': 1}" in hosts[0].log
    assert "no train metrics: this host's share of the train channel is empty" in hosts[0].log
    assert hosts[0].model_files == ["model-meta.json", "xgboost-meta.json", "xgboost-model.ubj"]


def test_sharded_by_s3_key_with_more_hosts_than_files_fails_with_a_sentence(tmp_path: Path) -> None:
    parts = split_sample(tmp_path / "parts", 2)
    per_host = []
    for i, part in enumerate([*sorted(parts.iterdir()), None]):
        folder = tmp_path / f"share-{i}"
        folder.mkdir()
        if part is not None:
            shutil.copy(part, folder)
        per_host.append(folder)
    hosts = run_hosts(tmp_path, 3, hyperparameters=PARAMS, train=per_host, distribution="ShardedByS3Key")
    assert all(h.code == 1 for h in hosts)
    assert hosts[0].failure is not None
    assert hosts[0].failure.startswith("3 hosts but only 2 training files under the train prefix")
    assert "127.0.0.3 got none" in hosts[0].failure
    assert all(h.model_files == [] for h in hosts)


def test_a_host_with_bad_rows_in_its_share_is_named_by_the_leader(tmp_path: Path) -> None:
    train = split_sample(tmp_path / "train", 2)
    bad = train / "part-001.csv"  # host 2's file (round-robin by name)
    lines = bad.read_text().splitlines()
    lines[5] = "," + lines[5].split(",", 1)[1]  # a missing target value
    bad.write_text("\n".join(lines) + "\n")
    leader, worker = run_hosts(tmp_path, 2, hyperparameters=PARAMS, train=train)
    assert (leader.code, worker.code) == (1, 1)
    assert worker.failure is not None and "missing value" in worker.failure
    assert leader.failure is not None
    assert leader.failure.startswith("Distributed training failed: host 127.0.0.2 failed: The target column")
    assert leader.model_files == []


@pytest.mark.parametrize("victim", [2, 1])
def test_a_host_killed_mid_training_fails_the_job_naming_it(tmp_path: Path, victim: int) -> None:
    """SIGKILL one worker mid-training (the OOM killer, a spot reclaim): the job fails, the leader's failure
    names that host and not the survivor, no host writes a model. With three hosts XGBoost's ring sometimes
    waits for the dead host indefinitely; the contract's watch ends it (within its 15 s grace)."""
    hosts = start_hosts(tmp_path, 3, hyperparameters={**PARAMS, "num_round": "100000"})
    try:
        hosts[victim].wait_for_line(f"xgboost collective: rank {victim} of 3")
        time.sleep(2)  # mid-training: 100,000 rounds take minutes
        hosts[victim].kill()
        codes = [host.wait(60) for host in hosts]
    finally:
        for host in hosts:
            host.stop()
    survivor = hosts[3 - victim]
    assert codes[0] == 1 and codes[victim] == -9 and survivor.code == 1
    leader = hosts[0]
    assert leader.failure is not None, leader.log[-3000:]
    assert leader.failure.startswith(
        f"Distributed training failed: host {hosts[victim].name} stopped: its training process ended without "
        "a reason"
    ), leader.failure
    assert survivor.name not in leader.failure  # a survivor, not a cause
    assert survivor.failure is None  # only the leader writes the failure of another host
    assert all(h.model_files == [] for h in hosts)


def test_checkpoints_resume_per_host_from_a_round_every_host_has(tmp_path: Path) -> None:
    """A restarted multi-host spot job: every host resumes from the newest round all hosts can load, and
    the model equals an uninterrupted run's."""
    params = {**PARAMS, "checkpoint_every": "10"}
    first = run_hosts(tmp_path / "a", 2, hyperparameters={**params, "num_round": "20"})
    assert [h.code for h in first] == [0, 0]
    # host 2 lost its newest checkpoint (its instance was reclaimed before it wrote round 20)
    (first[1].opt_ml / "checkpoints" / first[1].name / "checkpoint-20.ubj").unlink()
    resumed = run_hosts(tmp_path / "a", 2, hyperparameters={**params, "num_round": "30"}, keep=True)
    assert [h.code for h in resumed] == [0, 0], resumed[0].log[-3000:]
    for host in resumed:
        assert "Resuming from checkpoint: 10 of 30 rounds already done" in host.log
    straight = run_hosts(tmp_path / "b", 2, hyperparameters={**params, "num_round": "30"})
    assert [h.code for h in straight] == [0, 0]
    meta = json.loads((resumed[0].opt_ml / "model" / "model-meta.json").read_text())
    assert meta["model"]["num_round"] == 30
    assert _predictions(resumed[0]) == pytest.approx(_predictions(straight[0]), rel=1e-5, abs=1e-6)


def _predictions(host: Host) -> list[float]:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(host.opt_ml / "model" / "xgboost-model.ubj"))
    rows = np.loadtxt(SAMPLE / "validation" / "validation.csv", delimiter=",", skiprows=1, dtype=np.float32)
    return booster.inplace_predict(rows[:, 1:]).tolist()
