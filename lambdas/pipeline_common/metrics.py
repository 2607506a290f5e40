"""SageMaker MetricDefinitions for the container's metric lines (README: metric lines).

The container prints one line per metric, `METRIC <channel>:<name>=<value>`, e.g.
`METRIC validation:rmse=0.4213`; SageMaker applies each definition's regex to the job's log and keeps
the first capture group as the value. Names are `<channel>:<name>`, which is also how the audit record
and `scripts/runs.py` key them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

CHANNELS = ("train", "validation")
NAMES = ("rmse", "mae", "r2", "logloss", "accuracy", "auc")

# A decimal number with an optional exponent: 0.4213, -1.5, .5, 1e-05, 2.5E+3.
NUMBER = r"(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)"

# SageMaker's limits for a metric definition.
MAX_NAME_LENGTH = 255
MAX_REGEX_LENGTH = 500


def metric_regex(channel: str, name: str) -> str:
    return f"METRIC {re.escape(channel)}:{re.escape(name)}={NUMBER}"


def metric_definitions() -> list[dict[str, str]]:
    """One definition per channel x name, in a stable order."""
    definitions = [
        {"Name": f"{channel}:{name}", "Regex": metric_regex(channel, name)}
        for channel in CHANNELS
        for name in NAMES
    ]
    for definition in definitions:
        assert len(definition["Name"]) <= MAX_NAME_LENGTH and len(definition["Regex"]) <= MAX_REGEX_LENGTH
    return definitions


def apply_definitions(definitions: Iterable[Mapping[str, str]], log_text: str) -> dict[str, float]:
    """What SageMaker does with a job's MetricDefinitions: each regex over the log, the first capture group
    as the value, and the last parseable value of each metric wins."""
    found: dict[str, float] = {}
    for definition in definitions:
        for match in reversed(list(re.finditer(definition["Regex"], log_text))):
            try:
                found[definition["Name"]] = float(match.group(1))
                break
            except (IndexError, ValueError):
                continue
    return found


def scrape(log_text: str) -> dict[str, float]:
    """This project's definitions applied to log text."""
    return apply_definitions(metric_definitions(), log_text)
