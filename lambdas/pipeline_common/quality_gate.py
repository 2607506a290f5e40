"""The quality gate: a new model's final metric against the approved model's and an absolute floor.

Plain functions, no AWS: the Evaluate stage gathers the numbers, `decide` judges them and writes the one
readable reason, e.g. "validation:rmse 0.31 is 7% worse than the approved model 0.29 (v3; allowed 2%)".

- `regression` is how much worse the new value is than the approved one, as a fraction of the approved
  value (positive: worse, negative: better), whichever way the metric improves (`direction`).
- With no approved model, or one that reports no value for the metric, the floor alone decides.
- A metric missing from the job's final metrics fails the gate: a model that cannot be judged does not pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline_common.errors import ConfigurationError

MINIMIZE, MAXIMIZE = "minimize", "maximize"
DIRECTIONS = (MINIMIZE, MAXIMIZE)
PASSED, FAILED = "Passed", "Failed"


@dataclass(frozen=True)
class QualityGate:
    """The gate's configuration: the QUALITY_GATE Lambda variable, validated at synth (stacks.config)."""

    metric: str
    direction: str
    max_regression: float  # a fraction: 0.02 allows 2% worse than the approved model
    floor: float | None = None  # the value the metric must reach on its own (at most, or at least)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> QualityGate:
        try:
            raw = json.loads(text)
            gate = cls(
                metric=str(raw["metric"]),
                direction=str(raw["direction"]),
                max_regression=float(raw["max_regression"]),
                floor=None if raw.get("floor") is None else float(raw["floor"]),
            )
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigurationError(
                f"QUALITY_GATE must be JSON with metric, direction, max_regression and floor: {error}"
            ) from None
        if gate.direction not in DIRECTIONS or not 0 <= gate.max_regression <= 1:
            raise ConfigurationError(f"QUALITY_GATE is not a valid gate: {text}")
        return gate

    @property
    def better(self) -> str:
        return "lower is better" if self.direction == MINIMIZE else "higher is better"


@dataclass(frozen=True)
class Baseline:
    """The approved model the new one is compared with (the latest Approved package of the group)."""

    package_arn: str
    version: int
    value: float | None  # its value of the gate's metric; None when its metrics do not report it
    training_job: str | None = None
    data_version: str | None = None


@dataclass(frozen=True)
class GateResult:
    status: str  # PASSED or FAILED
    metric: str
    direction: str
    max_regression: float
    reason: str
    floor: float | None = None
    value: float | None = None  # None: the job did not report the metric
    regression: float | None = None  # vs the baseline; None without one (or against a perfect 0)
    baseline_package_arn: str | None = None
    baseline_version: int | None = None
    baseline_value: float | None = None
    baseline_training_job: str | None = None
    baseline_data_version: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def as_record(self) -> dict[str, Any]:
        """For the audit record and the evaluation document (unknown values left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> GateResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in record.items() if k in names})


def number(value: float) -> str:
    return f"{value:.4g}"


def percent(fraction: float, unlike: float | None = None) -> str:
    """7%, 2%, 0.4%: whole percents, unless that rounds a real difference to 0 or makes it read the same as
    `unlike` (a regression of 1.7% next to an allowed 2% reads "1.7%", not "2%")."""
    value = abs(fraction) * 100
    whole = f"{value:.0f}%"
    if 0 < value < 1 or (unlike is not None and value != abs(unlike) * 100 and whole == percent(unlike)):
        return f"{value:.1f}%"
    return whole


def regression_of(gate: QualityGate, value: float, baseline: float) -> float:
    """How much worse `value` is than `baseline`, as a fraction of it (negative: better)."""
    worse_by = value - baseline if gate.direction == MINIMIZE else baseline - value
    if baseline == 0:
        return 0.0 if worse_by <= 0 else math.inf
    return worse_by / abs(baseline)


def meets_floor(gate: QualityGate, value: float) -> bool:
    if gate.floor is None:
        return True
    return value <= gate.floor if gate.direction == MINIMIZE else value >= gate.floor


def decide(gate: QualityGate, metrics: Mapping[str, float], baseline: Baseline | None) -> GateResult:
    common: dict[str, Any] = {
        "metric": gate.metric,
        "direction": gate.direction,
        "max_regression": gate.max_regression,
        "floor": gate.floor,
    }
    if baseline is not None:
        common.update(
            baseline_package_arn=baseline.package_arn,
            baseline_version=baseline.version,
            baseline_value=baseline.value,
            baseline_training_job=baseline.training_job,
            baseline_data_version=baseline.data_version,
        )
    value = metrics.get(gate.metric)
    if value is None or not math.isfinite(value):
        reported = ", ".join(sorted(metrics)) or "none"
        reason = (
            f"{gate.metric} is not among the job's final metrics ({reported}), so the model cannot be judged"
        )
        return GateResult(status=FAILED, value=None, reason=reason, **common)

    failures: list[str] = []
    passes: list[str] = []
    regression: float | None = None
    if baseline is not None and baseline.value is not None:
        regression = regression_of(gate, value, baseline.value)
        against = f"the approved model {number(baseline.value)} (v{baseline.version}"
        allowed = f"allowed {percent(gate.max_regression)}"
        worse_by = percent(regression, unlike=gate.max_regression) if math.isfinite(regression) else ""
        if math.isinf(regression):
            failures.append(f"{gate.metric} {number(value)} is worse than {against}; {allowed})")
        elif regression > gate.max_regression:
            failures.append(f"{gate.metric} {number(value)} is {worse_by} worse than {against}; {allowed})")
        elif regression > 0:
            passes.append(f"{gate.metric} {number(value)} is {worse_by} worse than {against}; {allowed})")
        elif regression < 0:
            passes.append(f"{gate.metric} {number(value)} is {percent(regression)} better than {against})")
        else:
            passes.append(f"{gate.metric} {number(value)} equals {against})")
        if not meets_floor(gate, value):
            failures.append(f"misses the floor {number(gate.floor)} ({gate.better})")  # type: ignore[arg-type]
        elif gate.floor is not None:
            passes.append(f"meets the floor {number(gate.floor)}")
    else:
        # No approved model to compare with, or one whose metrics lack this one: the floor alone decides.
        alone = (
            "no approved model yet"
            if baseline is None
            else f"the approved model v{baseline.version} reports no {gate.metric}"
        )
        if not meets_floor(gate, value):
            failures.append(
                f"{gate.metric} {number(value)} misses the floor {number(gate.floor)} ({gate.better}); {alone}"  # type: ignore[arg-type]
            )
        elif gate.floor is not None:
            passes.append(f"{alone}: {gate.metric} {number(value)} meets the floor {number(gate.floor)}")
        else:
            passes.append(f"{alone} and no floor is set: {gate.metric} {number(value)} passes")

    finite = regression if regression is not None and math.isfinite(regression) else None
    if failures:
        return GateResult(
            status=FAILED, value=value, reason=", and ".join(failures), regression=finite, **common
        )
    return GateResult(status=PASSED, value=value, reason=", and ".join(passes), regression=finite, **common)
