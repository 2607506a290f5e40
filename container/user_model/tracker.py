"""XGBoost's tracker in a child process of the leader (see distributed.py): `python -m user_model.tracker
HOST_IP PORT WORKERS TIMEOUT`. Prints `ready` once it listens, and exits when the workers shut down."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from xgboost.tracker import RabitTracker

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """The kernel SIGKILLs the tracker when the leader's training process ends, however it ends (a failure
    ends the leader with os._exit, and the OOM killer or a SIGKILL gives it no chance to stop the tracker)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the leader died before the prctl
        os._exit(0)


def main(args: list[str]) -> int:
    _die_with_parent()
    host_ip, port, workers, timeout = args[0], int(args[1]), int(args[2]), int(args[3])
    # sortby=task: ranks follow the task ids the workers give (their rank in the sorted hosts).
    tracker = RabitTracker(n_workers=workers, host_ip=host_ip, port=port, sortby="task", timeout=timeout)
    tracker.start()
    print("ready", flush=True)
    tracker.wait_for()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
