"""Training benchmark: load + train the default model on a synthetic 1,000,000 x 20 CSV (~190 MB).

The run goes through the container's own `train` code path (sagemaker_contract.training on an /opt/ml
tree), in a child process, so wall time and peak RSS (ru_maxrss of the child) are the whole job's:
interpreter start, imports, CSV parse, QuantileDMatrix, 100 hist rounds at depth 6, metrics, model save.
The CSV is generated once (fixed seed) and cached in $BENCH_CACHE_DIR (default ~/.cache/ml-pipeline-bench).

    python bench/train.py [--rows 1000000] [--features 20] [--threads 0] [--repeat 1] [--container DIR]

On a shared machine one run says little: `--repeat N` runs the job N times and reports the fastest and the
median. `--container DIR` measures another checkout's container code (e.g. `git archive` of an older commit)
for a before/after comparison under the same load; run both alternately.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "ml-pipeline-bench"))


def synthetic_csv(rows: int, features: int) -> Path:
    """Target first, then features; 5 decimals (about 190 MB for 1M x 20). Generated with pyarrow: seconds."""
    path = CACHE / f"synthetic-{rows}x{features}-v2.csv"
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, features)).astype(np.float32).round(5)
    # A non-linear target with interactions, so 100 rounds of depth 6 have real work to do.
    y = (
        (
            2.0 * x[:, 0]
            + np.sin(3 * x[:, 1])
            + x[:, 2] * x[:, 3]
            + np.where(x[:, 4] > 0.5, 1.5, -0.5)
            + 0.3 * x[:, 5:].sum(axis=1)
            + rng.normal(0, 0.3, rows)
        )
        .astype(np.float32)
        .round(4)
    )
    columns = {"target": y, **{f"f{i}": x[:, i] for i in range(features)}}
    tmp = path.with_suffix(".tmp")
    pcsv.write_csv(pa.table(columns), tmp)
    tmp.replace(path)
    return path


CHILD = """
import os, resource, sys, time
sys.path.insert(0, {container!r})
started = time.perf_counter()
from sagemaker_contract import training
code = training.main()
print(f"child wall {{time.perf_counter() - started:.2f}} s", file=sys.stderr)
print(f"child peak rss {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}", file=sys.stderr)
sys.exit(code)
"""


def run_once(csv: Path, container: Path, threads: int) -> tuple[float, int, list[str], list[str]] | None:
    """One `train` job in a child process: wall time, its peak RSS, metric lines and phase lines."""
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        opt = work / "opt_ml"
        (opt / "input" / "config").mkdir(parents=True)
        (opt / "input" / "data" / "train").mkdir(parents=True)
        os.symlink(csv, opt / "input" / "data" / "train" / "train.csv")
        hyperparameters = {"num_round": "100", "max_depth": "6", "eta": "0.2", "nthread": str(threads)}
        (opt / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        env = {**os.environ, "OPT_ML_DIR": str(opt), "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(container=str(container))],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = child.communicate()
        wall = time.perf_counter() - started
        # The child's own ru_maxrss (KiB on Linux): RUSAGE_CHILDREN here would keep the largest of all runs.
        peak_rss = next(
            (int(line.split()[-1]) for line in stderr.splitlines() if line.startswith("child peak rss")), 0
        )
        if child.returncode != 0:
            print(stdout[-2000:], stderr[-3000:], sep="\n")
            return None
        metrics = [line for line in stdout.splitlines() if line.startswith("METRIC ")]
        phases = [line for line in stderr.splitlines() if line.startswith(("read ", "child wall"))]
        return wall, peak_rss, metrics, phases
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="XGBoost threads (0 = all cores)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the fastest and the median are reported")
    parser.add_argument(
        "--container", type=Path, default=ROOT / "container", help="the container code to run"
    )
    args = parser.parse_args()

    generated = time.perf_counter()
    csv = synthetic_csv(args.rows, args.features)
    generated = time.perf_counter() - generated
    csv_bytes = csv.stat().st_size
    walls: list[float] = []
    peaks: list[int] = []
    for _ in range(args.repeat):
        outcome = run_once(csv, args.container, args.threads)
        if outcome is None:
            return 1
        wall, peak_rss, metrics, phases = outcome
        walls.append(wall)
        peaks.append(peak_rss)
    wall = min(walls)
    peak_rss = max(peaks)

    print(f"train bench: {args.rows:,} rows x {args.features} features, CSV {csv_bytes / 1e6:.0f} MB "
          f"({'generated in ' + format(generated, '.1f') + ' s' if generated > 1 else 'cached'} at {csv})")  # fmt: skip
    print(f"  default model: XGBoost hist, 100 rounds, depth 6, eta 0.2, {os.cpu_count()} cores")
    print(f"  container code {args.container}")
    print(f"  wall time      {wall:6.2f} s   (whole `train` run in a child process)")
    if len(walls) > 1:
        print(
            f"    fastest of {len(walls)}; median {statistics.median(walls):.2f} s; all {' '.join(f'{w:.2f}' for w in walls)}"
        )
    for line in phases:
        print(f"    {line}")
    print(f"  rows/s         {args.rows / wall:10,.0f}")
    largest = f" (the largest of {len(peaks)} runs)" if len(peaks) > 1 else ""
    print(f"  peak RSS       {peak_rss / 1e6:6.0f} MB  = {peak_rss / csv_bytes:.2f}x the CSV size{largest}")
    for line in metrics:
        print(f"    {line}")
    goals = [("wall time < 15 s", wall < 15), ("peak RSS < 2.5x the CSV size", peak_rss < 2.5 * csv_bytes)]
    for text, met in goals:
        print(f"  {'met ' if met else 'MISS'}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
