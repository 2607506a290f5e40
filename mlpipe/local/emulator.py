"""The local AWS emulator: a moto server on a free loopback port, started and stopped with a `with` block.

    with MotoServer() as moto:
        boto3.client("s3", endpoint_url=moto.endpoint_url)
        ...
        moto.reset()  # forget every resource

`MotoServer(endpoint_url="http://127.0.0.1:5000")` reuses a server that is already running and neither
starts nor stops anything. The server process is always stopped on exit (terminate, then kill), also on
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO, Any, Self

from mlpipe.local.net import free_port

ACCOUNT = "123456789012"  # moto's default account: every emulated ARN carries it
DEFAULT_START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class EmulatorError(RuntimeError):
    """The emulator could not be started or reached; the message says why."""


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except (urllib.error.URLError, OSError):
        return False


class MotoServer:
    """A moto server subprocess (or an existing endpoint) for the duration of a `with` block."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self._external = endpoint_url.rstrip("/") if endpoint_url else None
        self._host = host
        self._port = port
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- what callers use --------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self._external:
            return self._external
        if self._port is None or self._process is None:
            raise EmulatorError("the moto server is not running (use MotoServer in a with block)")
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        if self._external:
            return int(self._external.rsplit(":", 1)[-1].split("/")[0])
        if self._port is None:
            raise EmulatorError("the moto server is not running")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id (None when reusing an existing endpoint)."""
        return self._process.pid if self._process else None

    @property
    def owned(self) -> bool:
        """True if this object started the server (and will stop it)."""
        return self._external is None

    def reset(self) -> None:
        """Forget every resource in the emulator (POST /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._external:
            if not _answers(self._external, timeout=5):
                raise EmulatorError(f"no emulator answers at {self._external}")
            return self
        if self._process is not None:
            return self
        self._port = self._port or free_port(self._host)
        self._log = tempfile.TemporaryFile(prefix="moto-server-")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "moto.server", "-H", self._host, "-p", str(self._port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        url = f"http://{self._host}:{self._port}"
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmulatorError(
                    f"moto server exited with code {self._process.returncode}: {self._output()}"
                )
            if _answers(url, timeout=0.5):
                return
            time.sleep(0.05)
        raise EmulatorError(
            f"moto server did not answer on {url} within {self._start_timeout:.0f}s: {self._output()}"
        )

    def _output(self) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            self._log.seek(0)
            return self._log.read().decode(errors="replace")[-2000:].strip()
        return ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def read_sns_inbox(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Drain an SQS queue subscribed to an SNS topic (raw delivery off): the messages as SNS sent them,
    [{subject, body, attributes: {name: value}}] in arrival order. This is how the local run and the tests
    read the emails the topic would send."""
    emails: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not messages.get("Messages"):
            return emails
        for message in messages["Messages"]:
            envelope = json.loads(message["Body"])
            attributes = {k: v.get("Value") for k, v in envelope.get("MessageAttributes", {}).items()}
            emails.append(
                {"subject": envelope.get("Subject"), "body": envelope["Message"], "attributes": attributes}
            )
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def main(argv: list[str] | None = None) -> int:
    """`mlpipe-emulator`: one emulator that outlives single runs (pass its URL as --endpoint-url)."""
    import argparse

    parser = argparse.ArgumentParser(prog="mlpipe-emulator", description=main.__doc__)
    parser.add_argument("--port", type=int, help="loopback port (default: a free one)")
    args = parser.parse_args(argv)
    with MotoServer(port=args.port) as server:
        print(f"emulator at {server.endpoint_url} (pid {server.pid}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
