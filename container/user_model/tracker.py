"""XGBoost's tracker in a child process of the leader (see distributed.py): `python -m user_model.tracker
HOST_IP PORT WORKERS TIMEOUT`. Prints `ready` once it listens, and exits when the workers shut down."""

from __future__ import annotations

import sys

from xgboost.tracker import RabitTracker


def main(args: list[str]) -> int:
    host_ip, port, workers, timeout = args[0], int(args[1]), int(args[2]), int(args[3])
    # sortby=task: ranks follow the task ids the workers give (their rank in the sorted hosts).
    tracker = RabitTracker(n_workers=workers, host_ip=host_ip, port=port, sortby="task", timeout=timeout)
    tracker.start()
    print("ready", flush=True)
    tracker.wait_for()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
