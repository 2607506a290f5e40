"""How much memory training may use: checked before any row is read.

A job that runs out of memory is killed (exit 137) before it can write /opt/ml/output/failure, so SageMaker
reports no reason. Estimating first and failing with a sentence is the only way the data scientist learns
why. The instance's memory is the smaller of what the kernel calls available and the container's cgroup limit
(SageMaker gives the container the whole instance; a local `--memory` limit shows up as the cgroup limit).
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_V2_LIMIT = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a number near 2**63


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def cgroup_limit() -> int | None:
    for path in (CGROUP_V2_LIMIT, CGROUP_V1_LIMIT):
        limit = _read_int(path)
        if limit is not None and limit < UNLIMITED:
            return limit
    return None


def meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def own_rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> int:
    """Bytes this process may still allocate (a very large number when nothing says otherwise)."""
    candidates = []
    available = meminfo_available()
    if available is not None:
        candidates.append(available)
    limit = cgroup_limit()
    if limit is not None:
        candidates.append(max(limit - own_rss(), 0))
    return min(candidates) if candidates else UNLIMITED


def text(size: float) -> str:
    """1.2 GB, 35 GB, 1,000 GB (decimal units, as instance types are listed)."""
    gigabytes = size / 1e9
    if gigabytes >= 10:
        return f"{gigabytes:,.0f} GB"
    if gigabytes >= 0.1:
        return f"{gigabytes:.1f} GB"
    return f"{size / 1e6:,.0f} MB"
