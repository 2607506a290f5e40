"""Local-run benchmark: seconds per stage of `mlpipe-local-run`, warm (image cached).

Runs the whole local pipeline execution `--runs` times (the first run also builds the image if it is
not cached yet) and prints each stage's median over the warm runs, next to the goal (< 60 s in total).

    python bench/local_run.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 60.0


def one_run(output: Path) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlpipe-local-run"), "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"local run failed (exit {result.returncode}):\n{result.stdout[-3000:]}")
    (run_dir,) = [p for p in output.iterdir() if p.is_dir()]
    stages = json.loads((run_dir / "stages.json").read_text())
    return wall, {s["stage"]: s["seconds"] for s in stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs after the first (warm-up) one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-local-run-") as tmp:
        first_wall, first = one_run(Path(tmp) / "first")
        runs = [one_run(Path(tmp) / f"warm-{i}") for i in range(args.runs)]
    walls = [wall for wall, _ in runs]
    print(
        f"local run: first run {first_wall:.1f} s (build {first.get('Build', 0):.1f} s), {args.runs} warm runs"
    )
    print(f"{'stage':<20}{'median s':>10}{'min s':>10}")
    for stage in first:
        values = [stages[stage] for _, stages in runs]
        print(f"{stage:<20}{statistics.median(values):>10.2f}{min(values):>10.2f}")
    median_wall = statistics.median(walls)
    print(f"{'wall (process)':<20}{median_wall:>10.2f}{min(walls):>10.2f}")
    verdict = "met" if median_wall < GOAL_SECONDS else "MISSED"
    print(f"goal: warm run under {GOAL_SECONDS:.0f} s: {verdict}")
    return 0 if median_wall < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
