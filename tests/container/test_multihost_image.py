"""The real image as SageMaker runs a multi-host job (and the SageMaker SDK's local mode does): one container
per host on a private network, hostnames algo-1..N, each with its own /opt/ml and resourceconfig.json. And a
spot reclaim: a training container SIGKILLed mid-run, then run again on the same checkpoints."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mlpipe.local import containers
from tests.container.conftest import METRIC_RE, SAMPLE, make_opt_ml
from tests.container.hosts import SHARED_CORES_ENV
from tests.container.test_image import PREFIX, image  # noqa: F401  (the module's image fixture)

pytestmark = pytest.mark.image
PARAMS = {"num_round": "40", "nthread": "1", "early_stopping_rounds": "0"}
RMSE_TOLERANCE = 0.02  # validation RMSE of two hosts within 2% of one host's (merged quantile sketches)


@dataclass
class Container:
    host: str
    name: str
    opt_ml: Path
    process: subprocess.Popen
    log_file: Path

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    @property
    def failure(self) -> str | None:
        path = self.opt_ml / "output" / "failure"
        return path.read_text() if path.exists() else None

    @property
    def model_files(self) -> list[str]:
        return sorted(p.name for p in (self.opt_ml / "model").iterdir())

    def wait_for(self, found: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert self.process.poll() is None and time.monotonic() < deadline, (
                f"no {what}:\n{self.log[-3000:]}"
            )
            time.sleep(0.1)


Job = Callable[..., list[Container]]


def _open(opt: Path) -> None:
    opt.chmod(0o777)
    for path in opt.rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o666)


@pytest.fixture
def job(tmp_path: Path) -> Iterator[Job]:
    """start(count, hyperparameters, opt_roots=None) -> containers on one private network; all removed after."""
    started: list[Container] = []
    network = f"{PREFIX}net-{uuid.uuid4().hex[:8]}"

    def start(
        tag: str, count: int, hyperparameters: dict[str, str], opts: list[Path] | None = None
    ) -> list[Container]:
        hosts = [f"algo-{i + 1}" for i in range(count)]
        if count > 1:
            containers.create_network(network)
        run = []
        for i, host in enumerate(hosts):
            opt = opts[i] if opts else make_opt_ml(tmp_path / f"{host}-{len(started)}", hyperparameters)
            (opt / "input" / "config" / "resourceconfig.json").write_text(
                json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "eth0"})
            )
            _open(opt)
            name = f"{PREFIX}{host}-{uuid.uuid4().hex[:8]}"
            log_file = tmp_path / f"{name}.log"
            process = containers.start_training_container(
                tag, opt, name, log_file,
                network=network if count > 1 else None, hostname=host,
                env={**SHARED_CORES_ENV, "MLPIPE_CLUSTER_TIMEOUT": "120"},
            )  # fmt: skip
            container = Container(host, name, opt, process, log_file)
            started.append(container)
            run.append(container)
        return run

    yield start
    for container in started:
        containers.remove_container(container.name)
    containers.remove_network(network)


def metrics(log: str) -> dict[tuple[str, str], float]:
    return {(c, n): float(v) for c, n, v in re.findall(METRIC_RE, log, flags=re.MULTILINE)}


def predictions(opt: Path) -> np.ndarray:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(opt / "model" / "xgboost-model.ubj"))
    rows = np.loadtxt(SAMPLE / "validation" / "validation.csv", delimiter=",", skiprows=1, dtype=np.float32)
    return booster.inplace_predict(rows[:, 1:])


def test_two_hosts_on_a_private_network_train_one_model(image: str, job: Job) -> None:  # noqa: F811
    [single] = job(image, 1, PARAMS)
    assert single.process.wait(timeout=180) == 0, single.log[-3000:]
    leader, worker = job(image, 2, PARAMS)
    codes = (leader.process.wait(timeout=300), worker.process.wait(timeout=300))
    assert codes == (0, 0), leader.log[-3000:] + worker.log[-3000:]
    assert "host algo-1 of 2 (leader algo-1, rank 0)" in leader.log
    assert "cluster: joined the leader algo-1" in worker.log
    assert leader.model_files == ["model-meta.json", "xgboost-meta.json", "xgboost-model.ubj"]
    assert worker.model_files == [] and "METRIC" not in worker.log
    ours, alone = metrics(leader.log), metrics(single.log)
    assert ours[("validation", "rmse")] == pytest.approx(alone[("validation", "rmse")], rel=RMSE_TOLERANCE)
    meta = json.loads((leader.opt_ml / "model" / "model-meta.json").read_text())
    assert meta["hosts"] == 2 and meta["rows"]["train"] == 2000
    assert (worker.opt_ml / "checkpoints" / "algo-2" / "checkpoint-40.ubj").exists()


def test_a_host_whose_container_is_killed_fails_the_job_naming_it(image: str, job: Job) -> None:  # noqa: F811
    leader, worker = job(image, 2, {**PARAMS, "num_round": "100000"})
    worker.wait_for(lambda: "xgboost collective: rank 1 of 2" in worker.log, "collective")
    time.sleep(2)
    containers.kill_container(worker.name)
    assert leader.process.wait(timeout=120) != 0
    assert worker.process.wait(timeout=60) != 0
    assert leader.failure is not None, leader.log[-3000:]
    assert leader.failure.startswith(
        "Distributed training failed: host algo-2 stopped: its training process ended without a reason"
    ), leader.failure
    assert leader.model_files == [] and worker.model_files == []


def test_a_spot_reclaim_resumes_from_the_last_checkpoint(image: str, job: Job, tmp_path: Path) -> None:  # noqa: F811
    """SIGKILL mid-run (what a spot reclaim does to the container), then the same job again on the same
    /opt/ml/checkpoints: it resumes from the newest checkpoint and ends with the same number of rounds, and
    its model predicts as an uninterrupted run's does (within 1e-5 relative: the trees are rebuilt in the
    same order from the same bins, so only float summation order could differ)."""
    params = {**PARAMS, "num_round": "1500", "checkpoint_every": "50"}
    [first] = job(image, 1, params)
    checkpoints = first.opt_ml / "checkpoints"
    first.wait_for(lambda: any(checkpoints.glob("checkpoint-*.ubj")), "checkpoint", timeout=120)
    containers.kill_container(first.name)
    assert first.process.wait(timeout=60) != 0
    assert first.model_files == []
    saved = sorted(int(p.stem.split("-")[1]) for p in checkpoints.glob("checkpoint-*.ubj"))
    assert saved and saved[-1] < 1500, f"killed too late: {saved}"

    [again] = job(image, 1, params, [first.opt_ml])
    assert again.process.wait(timeout=300) == 0, again.log[-3000:]
    assert f"Resuming from checkpoint: {saved[-1]} of 1500 rounds already done" in again.log
    [straight] = job(image, 1, params)
    assert straight.process.wait(timeout=300) == 0, straight.log[-3000:]
    for run in (again, straight):
        assert (
            json.loads((run.opt_ml / "model" / "model-meta.json").read_text())["model"]["num_round"] == 1500
        )
    np.testing.assert_allclose(predictions(again.opt_ml), predictions(straight.opt_ml), rtol=1e-5, atol=1e-6)
