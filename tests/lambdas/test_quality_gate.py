"""The quality gate's rule, in both directions, with and without an approved model and a floor; and the one
readable reason it gives for each outcome."""

from __future__ import annotations

import math

import pytest
from pipeline_common.errors import ConfigurationError
from pipeline_common.quality_gate import Baseline, QualityGate, decide, percent, regression_of

RMSE = QualityGate("validation:rmse", "minimize", 0.02, 0.5)
R2 = QualityGate("validation:r2", "maximize", 0.05, 0.6)
APPROVED = Baseline("arn:aws:sagemaker:us-east-1:123456789012:model-package/g/3", 3, 0.29, "job-3", "d1")


@pytest.mark.parametrize(
    ("value", "status", "reason"),
    [
        (0.31, "Failed", "validation:rmse 0.31 is 7% worse than the approved model 0.29 (v3; allowed 2%)"),
        (
            0.2965,
            "Failed",
            "validation:rmse 0.2965 is 2.2% worse than the approved model 0.29 (v3; allowed 2%)",
        ),
        (
            0.295,
            "Passed",
            "validation:rmse 0.295 is 1.7% worse than the approved model 0.29 (v3; allowed 2%), and meets the floor 0.5",
        ),
        (
            0.28,
            "Passed",
            "validation:rmse 0.28 is 3% better than the approved model 0.29 (v3), and meets the floor 0.5",
        ),
        (0.29, "Passed", "validation:rmse 0.29 equals the approved model 0.29 (v3), and meets the floor 0.5"),
        (
            0.73,
            "Failed",
            "validation:rmse 0.73 is 152% worse than the approved model 0.29 (v3; allowed 2%), and misses the floor "
            "0.5 (lower is better)",
        ),
    ],
)
def test_against_the_approved_model(value: float, status: str, reason: str) -> None:
    result = decide(RMSE, {"validation:rmse": value, "train:rmse": 0.1}, APPROVED)
    assert (result.status, result.reason) == (status, reason)
    assert result.baseline_package_arn == APPROVED.package_arn and result.baseline_value == 0.29
    assert result.regression == pytest.approx((value - 0.29) / 0.29)


def test_maximize_metrics_regress_downwards() -> None:
    approved = Baseline("arn:x/2", 2, 0.9)
    assert decide(R2, {"validation:r2": 0.8}, approved).reason == (
        "validation:r2 0.8 is 11% worse than the approved model 0.9 (v2; allowed 5%)"
    )
    assert decide(R2, {"validation:r2": 0.95}, approved).passed
    assert decide(R2, {"validation:r2": 0.55}, None).reason == (
        "validation:r2 0.55 misses the floor 0.6 (higher is better); no approved model yet"
    )


def test_without_an_approved_model_the_floor_alone_decides() -> None:
    assert (
        decide(RMSE, {"validation:rmse": 0.29}, None).reason
        == "no approved model yet: validation:rmse 0.29 meets the floor 0.5"
    )
    assert not decide(RMSE, {"validation:rmse": 0.51}, None).passed
    no_floor = QualityGate("validation:rmse", "minimize", 0.02)
    result = decide(no_floor, {"validation:rmse": 9.0}, None)
    assert (
        result.passed
        and result.reason == "no approved model yet and no floor is set: validation:rmse 9 passes"
    )


def test_an_approved_model_without_the_metric_leaves_the_floor_to_decide() -> None:
    silent = Baseline("arn:x/4", 4, None)
    result = decide(RMSE, {"validation:rmse": 0.4}, silent)
    assert result.passed and result.reason == (
        "the approved model v4 reports no validation:rmse: validation:rmse 0.4 meets the floor 0.5"
    )
    assert result.regression is None and result.baseline_version == 4


def test_a_metric_the_job_did_not_report_fails_the_gate() -> None:
    result = decide(RMSE, {"train:logloss": 0.3, "validation:logloss": 0.4}, APPROVED)
    assert not result.passed and result.value is None
    assert result.reason == (
        "validation:rmse is not among the job's final metrics (train:logloss, validation:logloss), so the model "
        "cannot be judged"
    )


def test_against_a_perfect_approved_model_any_worse_value_fails() -> None:
    perfect = Baseline("arn:x/1", 1, 0.0)
    assert regression_of(RMSE, 0.1, 0.0) == math.inf and regression_of(RMSE, 0.0, 0.0) == 0
    result = decide(RMSE, {"validation:rmse": 0.1}, perfect)
    assert not result.passed and result.regression is None  # not a number DynamoDB could store
    assert result.reason == "validation:rmse 0.1 is worse than the approved model 0 (v1; allowed 2%)"


def test_percentages_read_as_a_person_would_write_them() -> None:
    assert [percent(0.069), percent(0.02), percent(0.004), percent(-0.03)] == ["7%", "2%", "0.4%", "3%"]
    assert percent(0.017, unlike=0.02) == "1.7%" and percent(0.069, unlike=0.02) == "7%"


def test_the_record_round_trips_and_the_environment_is_validated() -> None:
    for result in (
        decide(RMSE, {"validation:rmse": 0.31}, APPROVED),
        decide(
            QualityGate("validation:rmse", "minimize", 0.02), {"train:rmse": 1.0}, None
        ),  # no floor, no value
    ):
        assert type(result).from_record(result.as_record()) == result
    assert QualityGate.from_json(RMSE.to_json()) == RMSE
    for bad in ("{}", '{"metric": "m", "direction": "sideways", "max_regression": 0.1}', "not json"):
        with pytest.raises(ConfigurationError, match="QUALITY_GATE"):
            QualityGate.from_json(bad)
