"""`serve`: the model server for the lean WSGI app in `serving.py`.

Default: `prefork.py`, a minimal pre-fork HTTP/1.1 server (one process per core, one model load per worker,
graceful SIGTERM). Measured on one-row requests it uses ~300 us of CPU per request against ~507 us for
gunicorn's sync worker around the same app, which is what lifts throughput (see bench/serve.py).
`SAGEMAKER_MODEL_SERVER=gunicorn` runs the same app under gunicorn (pre-fork, sync workers) instead.
No nginx in front: SageMaker's own front end already terminates the client connections.

Environment:
- `SAGEMAKER_BIND_TO_PORT` (inference pipelines) else port 8080.
- `SAGEMAKER_MODEL_SERVER_WORKERS` (default: number of cores).
- `SAGEMAKER_MODEL_SERVER_TIMEOUT` seconds per request (default 60, SageMaker's own limit; gunicorn only).

As root (SageMaker starts the container as root), the server drops to the unprivileged `model` user
before starting: serving only needs to read /opt/ml/model.
"""

from __future__ import annotations

import os
import pwd
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

SERVING_USER = "model"


class _Server(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called in each worker after the fork: one model load per worker, no shared OpenMP state.
        from sagemaker_contract.serving import create_app

        return create_app()


def options() -> dict[str, Any]:
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or 8080)
    workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS") or os.cpu_count() or 1)
    timeout = int(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT") or 60)
    return {
        "bind": f"0.0.0.0:{port}",
        "workers": workers,
        "worker_class": os.environ.get("SAGEMAKER_MODEL_SERVER_WORKER_CLASS", "sync"),
        "threads": int(os.environ.get("SAGEMAKER_MODEL_SERVER_THREADS") or 1),
        "keepalive": 5,
        "timeout": timeout,
        "graceful_timeout": 20,  # under SageMaker's 30 s between SIGTERM and SIGKILL
        "backlog": 2048,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": os.environ.get("SAGEMAKER_MODEL_SERVER_LOGLEVEL", "info"),
        "proc_name": "model-server",
        "control_socket_disable": True,  # gunicorn 27's runtime-control socket: not needed, and $HOME may be read-only
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
    }


def _drop_privileges() -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVING_USER)
    except KeyError:
        return  # no such user (e.g. a custom image): stay as is
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = user.pw_dir


def main(args: list[str]) -> int:
    _drop_privileges()
    opts = options()
    if os.environ.get("SAGEMAKER_MODEL_SERVER", "prefork") != "gunicorn":
        from sagemaker_contract import prefork

        return prefork.serve(int(opts["bind"].rsplit(":", 1)[1]), opts["workers"])
    # gunicorn computed its default uid/gid at import (as root); pin them to who we are now.
    opts["user"], opts["group"] = os.getuid(), os.getgid()
    print(f"serving on {opts['bind']} with {opts['workers']} worker(s)", file=sys.stderr, flush=True)
    _Server(opts).run()
    return 0
