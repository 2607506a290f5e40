"""mlpipe.local.eventbus: the synthesized rules decide which function an event reaches, with EventBridge's
matching rules, so a pattern that would miss AWS's real events misses them here too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlpipe.local.eventbus import LocalEventBus, UnsupportedPattern, matches
from stacks.functions import RECORD_APPROVAL, RECORD_STATUS, START_DEPLOY
from tests.lambdas.builders import model_package_event, state_change_event, tuning_state_change_event

EVENT = {"source": "aws.sagemaker", "detail": {"TrainingJobName": "mlpipe-dev-1", "Tags": ["a", "b"]}}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["aws.sagemaker", "aws.s3"]}, True),
        ({"source": ["aws.s3"]}, False),
        ({"detail": {"TrainingJobName": [{"prefix": "mlpipe-dev-"}]}}, True),
        ({"detail": {"TrainingJobName": [{"prefix": "other-"}]}}, False),
        ({"detail": {"TrainingJobName": [{"anything-but": "mlpipe-dev-1"}]}}, False),
        ({"detail": {"Tags": ["b"]}}, True),  # a list value matches if any element does
        ({"detail": {"Missing": [{"exists": False}]}}, True),
        ({"detail": {"Missing": [{"exists": True}]}}, False),
        # $or: any one of the listed patterns, at its level, together with the level's other keys.
        (
            {
                "source": ["aws.sagemaker"],
                "detail": {
                    "$or": [
                        {"TrainingJobName": [{"prefix": "mlpipe-dev-"}]},
                        {"HyperParameterTuningJobName": [{"prefix": "mlpipe-dev-"}]},
                    ]
                },
            },
            True,
        ),
        ({"detail": {"$or": [{"TrainingJobName": ["x"]}, {"HyperParameterTuningJobName": ["y"]}]}}, False),
        ({"source": ["aws.s3"], "detail": {"$or": [{"TrainingJobName": [{"prefix": "m"}]}]}}, False),
    ],
)
def test_patterns_match_as_eventbridge_matches_them(pattern: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, EVENT) is expected


def test_an_operator_not_implemented_locally_raises_even_on_an_absent_field() -> None:
    with pytest.raises(UnsupportedPattern):
        matches({"detail": {"Missing": [{"numeric": [">", 0]}]}}, EVENT)
    with pytest.raises(UnsupportedPattern):
        matches({"detail": {"TrainingJobName": [{"suffix": "-1"}]}}, EVENT)


@pytest.fixture(scope="module")
def bus(local_cloud: Any) -> LocalEventBus:
    return LocalEventBus(local_cloud.deployment)


@pytest.fixture(scope="module")
def prefix(local_cloud: Any) -> str:
    return str(local_cloud.deployment.function(RECORD_STATUS.handler).environment["JOB_NAME_PREFIX"])


@pytest.fixture(scope="module")
def group(local_cloud: Any) -> str:
    environment = local_cloud.deployment.function(RECORD_APPROVAL.handler).environment
    return str(environment["MODEL_PACKAGE_GROUP_NAME"])


def targets(bus: LocalEventBus, event: dict[str, Any]) -> list[str]:
    return [function.handler for function in bus.targets(event)]


def test_the_templates_rules_route_aws_sample_events_to_their_functions(
    bus: LocalEventBus, prefix: str, group: str
) -> None:
    """Built from AWS's published samples: a training job and a tuning job of this pipeline reach
    record-status; a decision on this group's package reaches record-approval, and an approval also
    start-deploy (the deploy stack's rule); a rejection only record-approval."""
    assert targets(bus, state_change_event(f"{prefix}job", "Completed", 60)) == [RECORD_STATUS.handler]
    assert targets(bus, tuning_state_change_event(f"{prefix}tune", "Completed", 60)) == [
        RECORD_STATUS.handler
    ]
    decided = model_package_event(group, 1, "Approved", datetime.now(UTC))
    assert targets(bus, decided) == [RECORD_APPROVAL.handler, START_DEPLOY.handler]
    rejected = model_package_event(group, 1, "Rejected", datetime.now(UTC))
    assert targets(bus, rejected) == [RECORD_APPROVAL.handler]


def test_the_templates_rules_ignore_other_jobs_groups_and_undecided_packages(
    bus: LocalEventBus, group: str
) -> None:
    assert targets(bus, state_change_event("someone-else-job", "Completed", 60)) == []
    assert targets(bus, model_package_event("other-group", 1, "Approved", datetime.now(UTC))) == []
    assert targets(bus, model_package_event(group, 1, "PendingManualApproval", datetime.now(UTC))) == []
    elsewhere = model_package_event(group, 1, "Approved", datetime.now(UTC))
    elsewhere["account"] = "999999999999"
    assert targets(bus, elsewhere) == []
