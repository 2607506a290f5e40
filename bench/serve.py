"""Serving benchmark: our server against its peers, every server in the same run, cell by cell.

Servers (same trained model, same number of worker processes each, all on loopback):
- `ours`: `python -m sagemaker_contract serve` from this checkout (granian + the RSGI bridge + dynamic batching); with
  `--container`, the real image instead (built with mlpipe.local.containers, published on a loopback port).
- `before` (`--before REF`): the same command from `container/` at a git ref, e.g. the pre-fork server.
- `classic`: bench/classic_byoc/predictor.py, the classic BYOC predictor (Flask + pandas.read_csv, gunicorn).
- `mlserver`, `uvicorn` (`--peers`): MLServer 1.7.1 with its XGBoost runtime (V2 JSON requests carrying the
  same rows), and our app under uvicorn + httptools + uvloop (bench/peer_apps.py). Both run from
  bench/.venv-peers, created on first use from bench/requirements-peers.txt (their pins clash with the dev
  venv's).

Load: wrk (Debian package `wrk`; one thread, keep-alive) when installed, else a small asyncio client in this
process (which saturates near 3k requests/s on 2 cores: install wrk for the real numbers). Cells are
interleaved server by server, so background load hits all alike: compare ratios within one run. Each cell
also gives the server's CPU time per request (master and workers, from /proc; not for `--container`): on a
shared machine it moves less than requests/s, and 1 / it bounds the requests/s one core can serve.

    python bench/serve.py [--seconds 3] [--workers N] [--container] [--before REF] [--peers]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))
SAMPLE = ROOT / "data" / "sample"
PEERS_VENV = ROOT / "bench" / ".venv-peers"
PEERS_REQUIREMENTS = ROOT / "bench" / "requirements-peers.txt"
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


def peers_python() -> Path:
    """bench/.venv-peers/bin/python, (re)created when requirements-peers.txt changed since the last install."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    wanted = hashlib.sha256(PEERS_REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    print(f"creating {PEERS_VENV.relative_to(ROOT)} from {PEERS_REQUIREMENTS.name} ...", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(PEERS_REQUIREMENTS)],
        check=True,
    )  # fmt: skip
    stamp.write_text(wanted)
    return python


@contextlib.contextmanager
def server(
    command: list[str], env: dict[str, str], port: int, cwd: Path, log: Path, ping: str = "/ping"
) -> Iterator[int]:
    """Start a server in its own process group (yielded, to count its CPU time); on exit SIGTERM it, then SIGKILL
    whatever of the group is left."""
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", ping)
                if connection.getresponse().status == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        else:
            raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # workers of a server that did not stop them


# -- load generators ------------------------------------------------------------------------------------------
@dataclass
class Target:
    port: int
    path: str
    content_type: str
    bodies: dict[int, bytes]
    process_group: int | None  # None: in a container, its CPU time is not counted


def group_cpu_seconds(process_group: int | None) -> float:
    """User + system CPU time of every live process in the group: the server's master and workers."""
    if process_group is None:
        return float("nan")
    ticks = 0
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(fields[2]) == process_group:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
function response(status, headers, body)
  if status ~= 200 then io.stderr:write("status " .. status .. "\\n"); wrk.thread:stop() end
end
"""


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure_wrk(target: Target, rows: int, concurrency: int, seconds: float, work: Path) -> dict[str, float]:
    script, body = work / "post.lua", work / f"body-{target.port}-{rows}"
    script.write_text(_WRK_SCRIPT)
    body.write_bytes(target.bodies[rows])
    env = {**os.environ, "BENCH_CONTENT_TYPE": target.content_type, "BENCH_BODY": str(body)}
    url = f"http://127.0.0.1:{target.port}{target.path}"
    results: dict[str, float] = {}
    # Warm-up on 16 connections, so that every worker has served (keep-alive pins one connection to one
    # worker), then the measurement.
    for duration, connections in ((max(seconds / 4, 1), max(concurrency, 16)), (seconds, concurrency)):
        cpu_before = group_cpu_seconds(target.process_group)
        done = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "--latency", "-s", str(script), url],
            env=env, capture_output=True, text=True, timeout=duration + 60, check=False,
        )  # fmt: skip
        out = done.stdout
        if done.returncode != 0 or "status " in done.stderr or "Non-2xx" in out:
            raise SystemExit(f"wrk against {url} failed: {done.stderr[-500:]}{out[-1500:]}")
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        results = {
            "cpu_us": (group_cpu_seconds(target.process_group) - cpu_before) / requests * 1e6,
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": _wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
            "p99": _wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        }
    return results


async def _one_client(target: Target, request: bytes, stop_at: float, latencies: list[float]) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        assert reader is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if int(head[9:12]) != 200:
            raise SystemExit(f"status {head[9:12].decode()} from port {target.port}")
        length, close = 0, False
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
    if writer is not None:
        writer.close()


async def _load(target: Target, body: bytes, concurrency: int, seconds: float) -> tuple[list[float], float]:
    request = (
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {target.content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_one_client(target, request, stop_at, latencies) for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def measure_asyncio(
    target: Target, rows: int, concurrency: int, seconds: float, work: Path
) -> dict[str, float]:
    body = target.bodies[rows]
    asyncio.run(_load(target, body, max(concurrency, 16), min(seconds / 4, 0.5)))  # warm-up, every worker
    cpu_before = group_cpu_seconds(target.process_group)
    latencies, elapsed = asyncio.run(_load(target, body, concurrency, seconds))
    cpu_us = (group_cpu_seconds(target.process_group) - cpu_before) / len(latencies) * 1e6
    latencies.sort()
    return {
        "cpu_us": cpu_us,
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)] * 1000,
    }


# -- payloads -------------------------------------------------------------------------------------------------
def sample_rows() -> list[str]:
    rows = [
        line.split(",", 1)[1]
        for line in (SAMPLE / "validation" / "validation.csv").read_text().splitlines()[1:]
    ]
    return (rows * (max(PAYLOAD_ROWS) // len(rows) + 1))[: max(PAYLOAD_ROWS)]


def csv_bodies() -> dict[int, bytes]:
    rows = sample_rows()
    return {n: ("\n".join(rows[:n]) + "\n").encode() for n in PAYLOAD_ROWS}


def v2_bodies() -> dict[int, bytes]:
    """MLServer's V2 inference protocol: the same rows as one FP32 tensor."""
    rows = [[float(v) for v in row.split(",")] for row in sample_rows()]
    return {
        n: json.dumps(
            {"inputs": [{"name": "input-0", "shape": [n, len(rows[0])], "datatype": "FP32",
                         "data": [v for row in rows[:n] for v in row]}]}
        ).encode()
        for n in PAYLOAD_ROWS
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--container", action="store_true", help="run our server in the real image")
    parser.add_argument("--before", metavar="REF", help="also run the server of container/ at this git ref")
    parser.add_argument("--peers", action="store_true", help="also MLServer and uvicorn+httptools")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    measure = measure_wrk if shutil.which("wrk") else measure_asyncio
    try:
        model_dir = train_model(work)
        csv, servers = csv_bodies(), {}
        with contextlib.ExitStack() as stack:
            port = free_port()
            if args.container:
                from mlpipe.local import containers

                # Per checkout (see tests/container/test_image.py): parallel checkouts never share a tag.
                checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
                image = f"mlpipe-bench-serve:{checkout}"
                containers.build_image(image)
                stack.enter_context(containers.serve(image, model_dir, port=port, workers=args.workers))
                group = None
            else:
                group = stack.enter_context(server(
                    [sys.executable, "-m", "sagemaker_contract", "serve"],
                    {"OPT_ML_DIR": str(model_dir.parent), "SAGEMAKER_BIND_TO_PORT": str(port),
                     "SAGEMAKER_MODEL_SERVER_HOST": "127.0.0.1", "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers),
                     "SAGEMAKER_MODEL_SERVER_LOGLEVEL": "warning", "PYTHONPATH": str(ROOT / "container")},
                    port, ROOT, work / "ours.log",
                ))  # fmt: skip
            servers["ours"] = Target(port, "/invocations", "text/csv", csv, group)
            if args.before:
                old = work / "before"
                old.mkdir()
                archive = subprocess.run(
                    ["git", "-C", str(ROOT), "archive", args.before, "container"],
                    check=True,
                    capture_output=True,
                ).stdout
                subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
                port = free_port()
                group = stack.enter_context(server(
                    [sys.executable, "-m", "sagemaker_contract", "serve"],
                    {"OPT_ML_DIR": str(model_dir.parent), "SAGEMAKER_BIND_TO_PORT": str(port),
                     "SAGEMAKER_MODEL_SERVER_HOST": "127.0.0.1", "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers),
                     "PYTHONPATH": str(old / "container")},
                    port, old, work / "before.log",
                ))  # fmt: skip
                servers["before"] = Target(port, "/invocations", "text/csv", csv, group)
            if args.peers:
                python = peers_python()
                port = free_port()
                group = stack.enter_context(server(
                    [str(python), "-m", "uvicorn", "--factory", "peer_apps:uvicorn_app", "--host", "127.0.0.1",
                     "--port", str(port), "--workers", str(args.workers), "--http", "httptools", "--loop", "uvloop",
                     "--no-access-log", "--log-level", "warning"],
                    {"OPT_ML_DIR": str(model_dir.parent), "BENCH_PORT": str(port),
                     "PYTHONPATH": f"{ROOT / 'container'}:{ROOT / 'bench'}"},
                    port, ROOT, work / "uvicorn.log",
                ))  # fmt: skip
                servers["uvicorn"] = Target(port, "/invocations", "text/csv", csv, group)
                port = free_port()
                mlserver = work / "mlserver"
                mlserver.mkdir()
                (mlserver / "settings.json").write_text(json.dumps(
                    {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                     "parallel_workers": args.workers, "debug": False}
                ))  # fmt: skip
                (mlserver / "model-settings.json").write_text(json.dumps(
                    {"name": "model", "implementation": "mlserver_xgboost.XGBoostModel",
                     "parameters": {"uri": str(model_dir / "xgboost-model.ubj")}}
                ))  # fmt: skip
                group = stack.enter_context(server(
                    # One OpenMP thread per worker, as ours and the classic baseline predict: XGBoost's default
                    # (all cores in every worker) oversubscribes the CPU and made MLServer ~20x slower here.
                    [str(python.parent / "mlserver"), "start", str(mlserver)], {"OMP_NUM_THREADS": "1"}, port, mlserver,
                    work / "mlserver.log", ping="/v2/health/ready",
                ))  # fmt: skip
                servers["mlserver"] = Target(
                    port, "/v2/models/model/infer", "application/json", v2_bodies(), group
                )
            port = free_port()
            group = stack.enter_context(server(
                [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
                 "--log-level", "warning", "--no-control-socket", "predictor:app"],
                {"MODEL_DIR": str(model_dir)}, port, ROOT / "bench" / "classic_byoc", work / "classic.log",
            ))  # fmt: skip
            servers["classic"] = Target(port, "/invocations", "text/csv", csv, group)
            where = "in the image, published loopback port" if args.container else "on the host"
            print(
                f"serve bench: {args.workers} worker(s) each, {os.cpu_count()} cores, {args.seconds:.0f} s per cell, "
                f"load from {'wrk (1 thread)' if measure is measure_wrk else 'asyncio client'}; ours {where}; "
                f"servers: {', '.join(servers)}",
                flush=True,
            )
            results: dict[tuple[str, int, int], dict[str, float]] = {}
            for rows in PAYLOAD_ROWS:
                for concurrency in CONCURRENCY:
                    for label, target in servers.items():  # interleaved: background load hits all alike
                        results[(label, rows, concurrency)] = measure(
                            target, rows, concurrency, args.seconds, work
                        )
        report(results, list(servers))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[tuple[str, int, int], dict[str, float]], labels: list[str]) -> None:
    print(
        "| rows | concurrency | "
        + " | ".join(f"{label} req/s (p50 / p99 ms; µs CPU/req)" for label in labels)
        + " |"
    )
    print("| --- | --- |" + " --- |" * len(labels))
    for rows in PAYLOAD_ROWS:
        for concurrency in CONCURRENCY:
            cells = []
            for label in labels:
                r = results[(label, rows, concurrency)]
                cpu = "n/a" if r["cpu_us"] != r["cpu_us"] else f"{r['cpu_us']:,.0f}"  # NaN: in a container
                cells.append(f"{r['rps']:,.0f} ({r['p50']:.2f} / {r['p99']:.2f}; {cpu})")
            print(f"| {rows} | {concurrency} | " + " | ".join(cells) + " |")
    ours = {key[1:]: value for key, value in results.items() if key[0] == "ours"}
    goals = [("p99 < 5 ms at 100 rows, c=1", ours[(100, 1)]["p99"] < 5)]
    if "mlserver" in labels:
        ml = {key[1:]: value for key, value in results.items() if key[0] == "mlserver"}
        goals += [
            (f"≥10x MLServer at 1 row, c=16 ({ours[(1, 16)]['rps'] / ml[(1, 16)]['rps']:.1f}x)",
             ours[(1, 16)]["rps"] >= 10 * ml[(1, 16)]["rps"]),
            ("≥2x MLServer at 1000 rows (" + ", ".join(f"c={c}: {ours[(1000, c)]['rps'] / ml[(1000, c)]['rps']:.1f}x" for c in CONCURRENCY) + ")",
             all(ours[(1000, c)]["rps"] >= 2 * ml[(1000, c)]["rps"] for c in CONCURRENCY)),
        ]  # fmt: skip
    if "before" in labels:
        before = {key[1:]: value for key, value in results.items() if key[0] == "before"}
        ratio = ours[(1, 16)]["rps"] / before[(1, 16)]["rps"]
        goals.append((f"≥90% of the server before at 1 row, c=16 ({ratio:.2f}x)", ratio >= 0.9))
    for text, met in goals:
        print(f"  {'met ' if met else 'MISS'}  {text}")


if __name__ == "__main__":
    sys.exit(main())
