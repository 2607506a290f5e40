"""record-approval on events built from AWS's published sample: each decision recorded once, with who and
why from DescribeModelPackage; one email per current decision; none for one a newer decision replaced;
redeliveries, disorder, other groups and malformed events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pipeline_common import model_package
from pipeline_common.errors import BadInputError

from tests.lambda_fixtures import Lambdas
from tests.lambdas.builders import model_package_event

FIRST = {"validation:rmse": 0.29, "train:rmse": 0.12}


def registered(lambdas: Lambdas) -> tuple[str, str]:
    """A first run's package awaiting approval: (training job, package ARN); its emails read."""
    run = lambdas.run_pipeline(FIRST)
    lambdas.emulated.read_inbox(lambdas.inbox)
    return run.job_name, lambdas.record_of(run.job_name)["model_package_arn"]


def decide_quietly(lambdas: Lambdas, arn: str, status: str, reason: str) -> tuple[Any, dict[str, Any]]:
    """A person decides; the registry's event is kept back (returned) instead of being delivered."""
    person = lambdas.approver()
    lambdas.sagemaker_as(person).update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=reason
    )
    (event,) = lambdas.package_events
    lambdas.package_events.clear()
    return person, event


def sample_event_for(lambdas: Lambdas, arn: str, **overrides: Any) -> dict[str, Any]:
    """The published sample's shape, for the package as the registry has it now."""
    package = lambdas.registry.packages[arn]
    fields = {
        "status": package["ModelApprovalStatus"],
        "changed_at": package["LastModifiedTime"],
        **overrides,
    }
    return model_package_event(
        lambdas.group, package["ModelPackageVersion"], fields["status"], fields["changed_at"]
    )


def statuses(lambdas: Lambdas) -> list[str]:
    return [e["attributes"]["status"] for e in lambdas.emulated.read_inbox(lambdas.inbox)]


def test_an_event_built_from_the_sample_records_the_decision_with_who_and_why(lambdas: Lambdas) -> None:
    job, arn = registered(lambdas)
    person, _ = decide_quietly(lambdas, arn, model_package.REJECTED, "drifts on the newest data")
    result = lambdas.record_approval(sample_event_for(lambdas, arn))
    assert result["outcome"] == "recorded" and result["emailed"]
    record = lambdas.record_of(job)
    (decision,) = record["approvals"]
    assert decision["decided_by"] == person.arn and decision["reason"] == "drifts on the newest data"
    assert decision["status"] == "Rejected" and decision["superseded"] is False
    assert record["approval_status"] == "Rejected"
    assert statuses(lambdas) == ["Rejected"]


def test_redeliveries_record_the_decision_once_and_email_once(lambdas: Lambdas) -> None:
    job, arn = registered(lambdas)
    _, event = decide_quietly(lambdas, arn, model_package.APPROVED, "ok")
    for delivery in (event, event, {**event, "id": "another-delivery-of-the-same-change"}):
        lambdas.record_approval(delivery)
    assert len(lambdas.record_of(job)["approvals"]) == 1
    assert statuses(lambdas) == ["Approved"]


def test_out_of_order_a_replaced_decision_is_recorded_as_superseded_without_an_email(
    lambdas: Lambdas,
) -> None:
    job, arn = registered(lambdas)
    _, approved = decide_quietly(lambdas, arn, model_package.APPROVED, "first look")
    rejector, rejected = decide_quietly(lambdas, arn, model_package.REJECTED, "second look: no")
    lambdas.record_approval(rejected)
    lambdas.record_approval(approved)  # late, and already replaced when it is read
    record = lambdas.record_of(job)
    assert record["approval_status"] == "Rejected" and record["approval_decided_by"] == rejector.arn
    by_status = {d["status"]: d for d in record["approvals"]}
    assert by_status["Approved"]["superseded"] is True and by_status["Approved"]["decided_by"].startswith(
        "unknown"
    )
    assert by_status["Rejected"]["superseded"] is False
    assert statuses(lambdas) == ["Rejected"], "no email for a decision already replaced"


def test_in_order_each_decision_is_emailed_and_the_newest_is_current(lambdas: Lambdas) -> None:
    job, arn = registered(lambdas)
    _, approved = decide_quietly(lambdas, arn, model_package.APPROVED, "ok")
    lambdas.record_approval(approved)
    _, rejected = decide_quietly(lambdas, arn, model_package.REJECTED, "changed my mind")
    lambdas.record_approval(rejected)
    lambdas.record_approval(approved)  # a late redelivery of the first changes nothing
    record = lambdas.record_of(job)
    assert [d["status"] for d in record["approvals"]] == ["Approved", "Rejected"]
    assert record["approval_status"] == "Rejected" and record["approval_reason"] == "changed my mind"
    assert statuses(lambdas) == ["Approved", "Rejected"]


def test_a_description_older_than_the_event_is_retried_not_recorded(lambdas: Lambdas) -> None:
    job, arn = registered(lambdas)
    package = lambdas.registry.packages[arn]
    ahead = sample_event_for(
        lambdas, arn, status="Approved", changed_at=package["LastModifiedTime"] + timedelta(seconds=30)
    )
    with pytest.raises(RuntimeError, match="the event says Approved"):
        lambdas.record_approval(ahead)
    assert "approvals" not in lambdas.record_of(job) and statuses(lambdas) == []


def test_other_groups_pending_packages_and_unknown_packages_change_nothing(lambdas: Lambdas) -> None:
    job, arn = registered(lambdas)
    package = lambdas.registry.packages[arn]
    other = model_package_event("someone-elses-group", 1, "Approved", package["LastModifiedTime"])
    assert lambdas.record_approval(other)["outcome"] == "not-ours"
    pending = sample_event_for(lambdas, arn, status="PendingManualApproval")
    assert lambdas.record_approval(pending)["outcome"] == "not-a-decision"
    # A package registered by hand in this group: no training job of ours to attach a decision to.
    manual = lambdas.cloud.client("sagemaker").create_model_package(
        ModelPackageGroupName=lambdas.group,
        ModelPackageDescription="uploaded by hand",
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": "img@sha256:" + "e" * 64, "ModelDataUrl": "s3://b/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )["ModelPackageArn"]
    lambdas.package_events.clear()
    assert lambdas.record_approval(sample_event_for(lambdas, manual))["outcome"] == "no-record"
    assert "approvals" not in lambdas.record_of(job) and statuses(lambdas) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["detail"].pop("ModelPackageArn"), "is not a versioned package's ARN"),
        (lambda e: e["detail"].update(ModelApprovalStatus="Maybe"), "unknown ModelApprovalStatus"),
        (lambda e: e.update({"detail-type": "SageMaker Training Job State Change"}), "expected source"),
        (lambda e: [e["detail"].pop(k) for k in ("LastModifiedTime", "CreationTime")], "neither"),
    ],
)
def test_a_malformed_event_raises_and_writes_nothing(lambdas: Lambdas, change: Any, message: str) -> None:
    job, arn = registered(lambdas)
    event = sample_event_for(lambdas, arn, status="Approved")
    change(event)
    with pytest.raises(BadInputError, match=message):
        lambdas.record_approval(event)
    assert "approvals" not in lambdas.record_of(job) and statuses(lambdas) == []
