"""SageMaker MetricDefinitions for the container's metric lines (README: metric lines).

The container prints one line per metric, `METRIC <channel>:<name>=<value>`, e.g.
`METRIC validation:rmse=0.4213`; SageMaker applies each definition's regex to the job's log and keeps
the first capture group as the value. Names are `<channel>:<name>`, which is also how the audit record
and `scripts/runs.py` key them.
"""

from __future__ import annotations

import re

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


def scrape(log_text: str) -> dict[str, float]:
    """Apply the definitions to log text as SageMaker does (the last value of each metric wins)."""
    found: dict[str, float] = {}
    for definition in metric_definitions():
        values = re.findall(definition["Regex"], log_text)
        for value in reversed(values):
            try:
                found[definition["Name"]] = float(value)
                break
            except ValueError:
                continue
    return found
