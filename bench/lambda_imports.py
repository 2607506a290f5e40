"""Cold import time of each Lambda handler: `.venv/bin/python bench/lambda_imports.py [--repeats N]`.

Each sample is a fresh Python process with `lambdas/` as the code root (as /var/task on Lambda), timing
`import <function>.handler` with time.perf_counter. Powertools is imported as the layer provides it
(no optional extras); boto3 is imported lazily on the first AWS call, so it is measured separately as
the first-invocation cost. One untimed run first writes the bytecode caches, as a deployed package would
ship them. Goal: each handler imports in under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = ROOT / "lambdas"
GOAL_MS = 300.0
MODULES = {
    "start-training": "start_training.handler",
    "record-status": "record_status.handler",
    "data-trigger": "data_trigger.handler",
}
# For context: what the lazily imported pieces cost on their own.
REFERENCES = {
    "(Powertools Logger alone)": "aws_lambda_powertools.logging",
    "(boto3 alone: first AWS call)": "boto3",
    "(Powertools idempotency: first record-status call)": "aws_lambda_powertools.utilities.idempotency",
}

_PROBE = """
import json, sys, time
sys.path.insert(0, {path!r})
started = time.perf_counter()
import {module}
elapsed = (time.perf_counter() - started) * 1000
print(json.dumps({{"ms": elapsed, "boto3": "boto3" in sys.modules}}))
"""


def sample(module: str) -> dict[str, float | bool]:
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_SERVICE_NAME": "bench"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(path=str(LAMBDAS), module=module)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"import {module} failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(module: str, repeats: int) -> tuple[float, float, bool]:
    sample(module)  # warm the bytecode cache; not counted
    runs = [sample(module) for _ in range(repeats)]
    times = [float(run["ms"]) for run in runs]
    return statistics.median(times), min(times), any(bool(run["boto3"]) for run in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per handler (default 7)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    rows = []
    for name, module in {**MODULES, **REFERENCES}.items():
        median, fastest, boto3_loaded = measure(module, args.repeats)
        rows.append(
            {
                "function": name,
                "module": module,
                "median_ms": median,
                "min_ms": fastest,
                "boto3": boto3_loaded,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            f"Lambda handler cold import, {args.repeats} fresh processes each (Python {sys.version.split()[0]})"
        )
        print(
            f"{'function':<52} {'median ms':>10} {'min ms':>8}  {'boto3 at import':<15} goal <{GOAL_MS:.0f} ms"
        )
        for row in rows:
            is_handler = row["function"] in MODULES
            verdict = ("ok" if row["median_ms"] < GOAL_MS else "OVER") if is_handler else ""
            print(
                f"{row['function']:<52} {row['median_ms']:>10.1f} {row['min_ms']:>8.1f}  "
                f"{'yes' if row['boto3'] else 'no':<15} {verdict}"
            )
    over = [row for row in rows if row["function"] in MODULES and row["median_ms"] >= GOAL_MS]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
