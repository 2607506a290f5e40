"""SageMaker MetricDefinitions for the container's metric lines (README: metric lines).

The container prints one line per metric, `METRIC <channel>:<name>=<value>`, e.g.
`METRIC validation:rmse=0.4213`; SageMaker applies each definition's regex to the job's log and keeps
the first capture group as the value. Names are `<channel>:<name>`, which is also how the audit record
and `mlpipe-runs` key them.

The metric names are the model's: its `model.json` declares them, the stack reads them at synth
(`stacks.model.metric_names`) and passes them to start-training in TRAINING_CONFIG.metric_names. The
channels are the contract's (`sagemaker_contract.training.METRIC_CHANNELS`; a test holds the two equal).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

# Each channel's metrics are printed only when the job has that channel. `test` holds the final, unbiased
# metrics; `validation` is optimistic when early stopping chose on it, `train` always is.
CHANNELS = ("train", "validation", "test")
# Which channel's value is a run's headline metric (emails, `mlpipe-runs`): the least optimistic present.
HEADLINE_CHANNEL_ORDER = ("test", "validation", "train")

# A decimal number with an optional exponent: 0.4213, -1.5, .5, 1e-05, 2.5E+3.
NUMBER = r"(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)"

# SageMaker's limits for a metric definition.
MAX_NAME_LENGTH = 255
MAX_REGEX_LENGTH = 500
# AlgorithmSpecification.MetricDefinitions takes at most 40 definitions.
MAX_METRIC_DEFINITIONS = 40


def metric_regex(channel: str, name: str) -> str:
    return f"METRIC {re.escape(channel)}:{re.escape(name)}={NUMBER}"


def metric_definitions(names: Sequence[str]) -> list[dict[str, str]]:
    """One definition per channel x the model's metric names, in a stable order. The stack checked the
    names at synth; this raises ValueError if they break SageMaker's limits anyway."""
    definitions = [
        {"Name": f"{channel}:{name}", "Regex": metric_regex(channel, name)}
        for channel in CHANNELS
        for name in names
    ]
    if not definitions or len(definitions) > MAX_METRIC_DEFINITIONS:
        raise ValueError(
            f"{len(definitions)} metric definitions: SageMaker takes 1 to {MAX_METRIC_DEFINITIONS} "
            f"({len(CHANNELS)} channels x the model's metric names)"
        )
    for definition in definitions:
        if len(definition["Name"]) > MAX_NAME_LENGTH or len(definition["Regex"]) > MAX_REGEX_LENGTH:
            raise ValueError(f"metric definition {definition['Name'][:80]!r} is longer than SageMaker allows")
    return definitions


def headline(metrics: Mapping[str, float] | None) -> tuple[str, float] | None:
    """A run's headline metric: the first name (sorted) of the least optimistic channel it has."""
    for channel in HEADLINE_CHANNEL_ORDER:
        names = sorted(name for name in metrics or {} if name.startswith(f"{channel}:"))
        if names:
            return names[0], float(metrics[names[0]])  # type: ignore[index]
    return None


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


def scrape(log_text: str, names: Sequence[str]) -> dict[str, float]:
    """The definitions for the metric `names` applied to log text."""
    return apply_definitions(metric_definitions(names), log_text)
