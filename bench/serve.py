"""Serving benchmark: the container's server vs the classic BYOC predictor, side by side in one run.

Both run on the host with this venv's python, on loopback, with the same trained model and the same
number of gunicorn workers (cores, or --workers): ours is `python -m sagemaker_contract serve` (the image's
exact code and server), the baseline is bench/classic_byoc/predictor.py (Flask + pandas.read_csv).
The load generator is a small asyncio HTTP/1.1 client in this process (keep-alive when the server allows it).
By default both run on the host (no container networking in the numbers); `--container` runs the container's
server in the real image instead (built with scripts/container_tool.py, published on a loopback port).

    python bench/serve.py [--seconds 3] [--workers N] [--container]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))
SAMPLE = ROOT / "data" / "sample"
PAYLOAD_ROWS = (1, 100, 1000)
CONCURRENCY = (1, 16)


def train_model(work: Path) -> Path:
    """The default model on the sample data, through the same contract code path as `train`."""
    from sagemaker_contract import training

    opt = work / "opt_ml"
    (opt / "input" / "config").mkdir(parents=True)
    (opt / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"num_round": "100", "max_depth": "6", "eta": "0.2"})
    )
    for channel in ("train", "validation"):
        shutil.copytree(SAMPLE / channel, opt / "input" / "data" / channel)
    os.environ["OPT_ML_DIR"] = str(opt)
    with contextlib.redirect_stdout(sys.stderr):
        code = training.main()
    if code != 0:
        raise SystemExit(f"training failed: {(opt / 'output' / 'failure').read_text()}")
    return opt / "model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], port: int, cwd: Path, log: Path) -> Iterator[int]:
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=cwd, stdout=log_handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


# -- load generator --------------------------------------------------------------------------------------
async def _one_client(
    port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[str]
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await reader.readexactly(length)
        if close:
            writer.close()
            writer = reader = None
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors.append(str(status))
    if writer is not None:
        writer.close()


async def _load(
    port: int, body: bytes, concurrency: int, seconds: float
) -> tuple[list[float], list[str], float]:
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\nAccept: text/csv\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_one_client(port, request, stop_at, latencies, errors) for _ in range(concurrency))
    )
    return latencies, errors, time.perf_counter() - started


def measure(port: int, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    asyncio.run(_load(port, body, concurrency, min(seconds / 4, 0.5)))  # warm-up
    latencies, errors, elapsed = asyncio.run(_load(port, body, concurrency, seconds))
    if errors:
        raise SystemExit(f"{len(errors)} requests failed (status {errors[0]})")
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)] * 1000,
        "n": len(latencies),
    }


def payloads() -> dict[int, bytes]:
    rows = [
        line.split(",", 1)[1]
        for line in (SAMPLE / "validation" / "validation.csv").read_text().splitlines()[1:]
    ]
    rows = (rows * (1000 // len(rows) + 1))[:1000]
    return {n: ("\n".join(rows[:n]) + "\n").encode() for n in PAYLOAD_ROWS}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--container", action="store_true", help="run the container's server in the real image"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        model_dir = train_model(work)
        bodies = payloads()
        ours_port, classic_port = free_port(), free_port()
        ours_cmd = [sys.executable, "-m", "sagemaker_contract", "serve"]
        ours_env = {
            "OPT_ML_DIR": str(model_dir.parent),
            "SAGEMAKER_BIND_TO_PORT": str(ours_port),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers),
            "SAGEMAKER_MODEL_SERVER_LOGLEVEL": "warning",
            "PYTHONPATH": str(ROOT / "container"),
        }
        classic_cmd = [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-b", f"127.0.0.1:{classic_port}",
                       "--log-level", "warning", "--no-control-socket", "predictor:app"]  # fmt: skip
        classic_env = {"MODEL_DIR": str(model_dir)}
        results: dict[tuple[str, int, int], dict[str, float]] = {}
        if args.container:
            sys.path.insert(0, str(ROOT))
            from scripts import container_tool

            # Per checkout (see tests/container/test_image.py): parallel checkouts never share a tag.
            checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
            image = f"mlpipe-bench-serve:{checkout}"
            container_tool.build_image(image)
            ours_server = container_tool.serve(image, model_dir, port=ours_port, workers=args.workers)
        else:
            ours_server = server(ours_cmd, ours_env, ours_port, ROOT, work / "ours.log")
        where = "in the image, published loopback port" if args.container else "on the host, loopback"
        print(
            f"serve bench: {args.workers} worker(s) each, {os.cpu_count()} cores, {args.seconds:.0f} s per cell; "
            f"container server {where}; classic baseline on the host"
        )
        with (
            ours_server,
            server(
                classic_cmd, classic_env, classic_port, ROOT / "bench" / "classic_byoc", work / "classic.log"
            ),
        ):
            for rows in PAYLOAD_ROWS:
                for concurrency in CONCURRENCY:
                    # Interleave the two servers per cell so background load hits both alike.
                    for label, port in (("container", ours_port), ("classic", classic_port)):
                        results[(label, rows, concurrency)] = measure(
                            port, bodies[rows], concurrency, args.seconds
                        )
        report(results)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[tuple[str, int, int], dict[str, float]]) -> None:
    header = f"{'rows':>5} {'conc':>4} | {'container req/s':>15} {'p50 ms':>7} {'p99 ms':>7} | {'classic req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for rows in PAYLOAD_ROWS:
        for concurrency in CONCURRENCY:
            ours, classic = results[("container", rows, concurrency)], results[("classic", rows, concurrency)]
            print(
                f"{rows:>5} {concurrency:>4} | {ours['rps']:>15,.0f} {ours['p50']:>7.2f} {ours['p99']:>7.2f} | "
                f"{classic['rps']:>13,.0f} {classic['p50']:>7.2f} {classic['p99']:>7.2f} | {ours['rps'] / classic['rps']:>5.1f}x"
            )
    goals = [
        ("≥3x baseline req/s at 1 row, c=16", results[("container", 1, 16)]["rps"] >= 3 * results[("classic", 1, 16)]["rps"]),
        ("never slower at 1000 rows", all(results[("container", 1000, c)]["rps"] >= results[("classic", 1000, c)]["rps"] for c in CONCURRENCY)),
        ("p99 < 5 ms at c=1", all(results[("container", r, 1)]["p99"] < 5 for r in PAYLOAD_ROWS)),
    ]  # fmt: skip
    for text, met in goals:
        print(f"  {'met ' if met else 'MISS'}  {text}")


if __name__ == "__main__":
    sys.exit(main())
