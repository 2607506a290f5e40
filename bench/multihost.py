"""Multi-host benchmark: the same data trained on 1, 2 and 4 hosts, peak memory per host, wall time, metric.

Each host is a `python -m sagemaker_contract train` process with its own /opt/ml tree and resourceconfig.json,
on a loopback address (tests/container/hosts.py), running XGBoost's collective across hosts exactly as in the
containers. The train channel is 8 CSV files (FullyReplicated: each host reads its files, round-robin by
name); the validation channel is replicated on every host, as SageMaker copies it.

    python bench/multihost.py [--rows 400000] [--features 20] [--rounds 50] [--hosts 1 2 4]

On this project's 2-core machine the wall time does not drop with more hosts: every "host" shares the same
two cores (one thread each). What sharding buys is the memory per host, which is what lets the data outgrow
one instance. Peak RSS is ru_maxrss of each host's process (wait4), interpreter and libraries included.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script in bench/: the repository's test helpers

from tests.container.hosts import run_hosts  # noqa: E402

CACHE = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "ml-pipeline-bench"))
FILES = 8


def dataset(rows: int, features: int) -> tuple[Path, Path]:
    """`FILES` train parts and a validation file (fixed seed), cached."""
    folder = CACHE / f"multihost-{rows}x{features}"
    train, validation = folder / "train", folder / "validation"
    if (folder / "done").exists():
        return train, validation
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(11)
    train.mkdir(parents=True, exist_ok=True)
    validation.mkdir(parents=True, exist_ok=True)

    def write(path: Path, n: int) -> None:
        x = rng.normal(size=(n, features)).astype(np.float32)
        y = 2 * x[:, 0] + np.sin(3 * x[:, 1]) + x[:, 2] * x[:, 3] + 0.3 * x[:, 4:].sum(axis=1)
        y += rng.normal(0, 0.3, n).astype(np.float32)
        columns = {"target": y.round(4), **{f"f{i}": x[:, i].round(5) for i in range(features)}}
        pcsv.write_csv(pa.table(columns), path)

    for k in range(FILES):
        write(train / f"part-{k:03d}.csv", rows // FILES)
    write(validation / "validation.csv", rows // 10)
    (folder / "done").touch()
    return train, validation


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_600_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    train, validation = dataset(args.rows, args.features)
    size = sum(p.stat().st_size for p in train.iterdir()) / 1e6
    print(f"train: {args.rows:,} rows x {args.features} features in {FILES} CSV files ({size:.0f} MB); "
          f"{args.rounds} rounds, depth 6, one thread per host; {os.cpu_count()} cores")  # fmt: skip
    print(f"{'hosts':>5} | {'peak RSS per host (MB)':<28} | {'max':>6} | {'wall s':>6} | validation rmse")
    for count in args.hosts:
        params = {"num_round": str(args.rounds), "nthread": "1", "early_stopping_rounds": "0"}
        with tempfile.TemporaryDirectory(prefix="bench-multihost-") as tmp:
            started = time.perf_counter()
            hosts = run_hosts(Path(tmp), count, hyperparameters=params, train=train, validation=validation)
            wall = time.perf_counter() - started
            failed = [h for h in hosts if h.code != 0]
            if failed:
                print(failed[0].log[-3000:], file=sys.stderr)
                return 1
            rss = [h.max_rss_kb / 1024 for h in hosts]
            rmse = re.search(r"^METRIC validation:rmse=(\S+)$", hosts[0].log, flags=re.MULTILINE)
        shown = ", ".join(f"{r:.0f}" for r in rss)
        print(
            f"{count:>5} | {shown:<28} | {max(rss):>6.0f} | {wall:>6.1f} | {rmse.group(1) if rmse else 'n/a'}"
        )
    print("Wall time is not expected to drop here: all hosts share this machine's cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
