"""The notification email: one per real status transition of a run (a training job or a tuning job; not
the trials of a tuning job), built from the audit record.

Subject: `[<project>/<env>] Training <Status>: <job> (<short sha>, data v<short data version>)` (`Tuning`
for a tuning job), at most 99 ASCII characters (SNS allows < 100): if that is too long the job name is
shortened in the middle. Message attributes `event`, `status` and `job_name` (String) let subscribers
filter, e.g. to failures only. The emails after training (quality gate failed, package registered,
approved, rejected) are built here too, from the same record, with the same attributes (see "after
training" below).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pipeline_common import aws, model_package
from pipeline_common.metrics import headline

MAX_SUBJECT = 99
# Below this many characters a shortened job name stops being recognisable.
MIN_JOB_NAME_IN_SUBJECT = 24
SHORT_SHA = 7
SHORT_DATA_VERSION = 8

# Approximate on-demand list prices for SageMaker training, USD per instance-hour (us-east-1). Good enough
# for an order-of-magnitude line in an email; the bill is the authority.
ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "ml.t3.medium": 0.05,
    "ml.t3.large": 0.10,
    "ml.t3.xlarge": 0.20,
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.m5.12xlarge": 2.765,
    "ml.m6i.large": 0.115,
    "ml.m6i.xlarge": 0.23,
    "ml.m6i.2xlarge": 0.461,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.c5.9xlarge": 1.836,
    "ml.r5.large": 0.151,
    "ml.r5.xlarge": 0.302,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.p3.2xlarge": 3.825,
}


def short(value: Any, length: int) -> str:
    text = str(value or "")
    return text[:length] if text else "unknown"


def subject(project: str, env: str, record: Mapping[str, Any]) -> str:
    """The full form if it fits SNS's limit. Else the job name is shortened in the middle (a deployed job
    name is the prefix plus a 36-character execution id, too long to fit with the rest), keeping commit and
    data version; only if that leaves too little of the job name is the data version dropped. The body
    and the `job_name` message attribute always carry the full name."""
    status = str(record.get("status", "Unknown"))
    sha = short(record.get("commit_id"), SHORT_SHA)
    data = short(record.get("data_version"), SHORT_DATA_VERSION)
    return fit_subject(
        f"[{project}/{env}] {_what(record)} {status}: ",
        str(record.get("job_name", "?")),
        (f" ({sha}, data v{data})", f" ({sha})"),
    )


def fit_subject(head: str, job: str, tails: tuple[str, ...]) -> str:
    """`head + job + tail` within SNS's subject limit: the first tail that leaves room for a recognisable
    job name, which is shortened in the middle if it must be."""
    full = f"{head}{job}{tails[0]}"
    if len(_ascii(full)) <= MAX_SUBJECT:
        return _ascii(full)
    for tail in tails:
        room = MAX_SUBJECT - len(head) - len(tail)
        if room >= MIN_JOB_NAME_IN_SUBJECT or tail == tails[-1]:
            room = max(room, 9)
            keep_end = (room - 3) // 3
            shortened = f"{job[: room - 3 - keep_end]}...{job[len(job) - keep_end :]}"
            return _ascii(f"{head}{shortened}{tail}")[:MAX_SUBJECT]
    raise AssertionError("unreachable")


def _is_tuning(record: Mapping[str, Any]) -> bool:
    return record.get("kind") == "tuning"


def _what(record: Mapping[str, Any]) -> str:
    return "Tuning" if _is_tuning(record) else "Training"


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


# -- body ------------------------------------------------------------------------------------------------
def duration_seconds(record: Mapping[str, Any]) -> float | None:
    start, end = record.get("started_at") or record.get("created_at"), record.get("ended_at")
    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except ValueError:
        return None


def format_duration(seconds: float) -> str:
    """4.2s, 2m05s, 1h02m03s: the one duration format of emails, `mlpipe-runs` and the local run."""
    if seconds < 60:
        return f"{max(0.0, seconds):.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def duration_text(seconds: float | None) -> str:
    return "unknown (still running)" if seconds is None else format_duration(seconds)


def spot_savings(billable: Any, training: Any) -> float | None:
    """Managed spot's saving, `1 - BillableTimeInSeconds / TrainingTimeInSeconds` (DescribeTrainingJob), as
    a fraction from 0 to 1; None without a training time."""
    if not training or billable is None:
        return None
    return round(max(0.0, 1 - float(billable) / float(training)), 4)


def spot_line(record: Mapping[str, Any]) -> str | None:
    """The email's spot line: only for a spot run."""
    if not record.get("use_spot"):
        return None
    saving = spot_savings(record.get("billable_seconds"), record.get("training_seconds"))
    if saving is None:
        return "managed spot (savings known when the job has ended)"
    return (
        f"{saving * 100:.0f}% saved by managed spot (billed {record.get('billable_seconds')} s of "
        f"{record.get('training_seconds')} s trained)"
    )


def estimated_cost(record: Mapping[str, Any]) -> str:
    """Billable instance-hours x the on-demand price; 'unknown' for an unknown type or no billable time.
    A tuning job's billable time is that of all its trials."""
    instance_type = str(record.get("instance_type") or "")
    count = int(record.get("instance_count") or 1)
    billable = record.get("billable_seconds")
    price = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    if billable is None:
        return "unknown (no billable time yet)"
    hours = float(billable) * count / 3600
    if price is None:
        return f"unknown ({hours:.3f} instance-hours of {instance_type or 'an unknown instance type'})"
    text = f"~${hours * price:.4f} ({hours:.3f} instance-hours of {instance_type} at ~${price}/h on demand)"
    if record.get("use_spot"):
        training = record.get("training_seconds")
        saving = ""
        fraction = spot_savings(billable, training)
        if fraction is not None:
            saving = f", {fraction * 100:.0f}% saved"
        text += f"; managed spot: billable time already reflects the spot discount{saving}"
    return text


def console_links(region: str, pipeline: str, record: Mapping[str, Any]) -> dict[str, str]:
    job = str(record.get("job_name", ""))
    base = f"https://{region}.console.aws.amazon.com"
    log_group = quote(quote("/aws/sagemaker/TrainingJobs", safe=""), safe="").replace("%", "$")
    if _is_tuning(record):
        links = {"Tuning job": f"{base}/sagemaker/home?region={region}#/hyper-tuning-jobs/{job}"}
        best = record.get("best_training_job")
        if best:
            links["Best training job"] = f"{base}/sagemaker/home?region={region}#/jobs/{best}"
        # The trials' log streams start with the tuning job's name.
        links["Logs"] = (
            f"{base}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{log_group}"
            f"$3FlogStreamNameFilter$3D{quote(job, safe='')}"
        )
        return _with_execution(links, base, region, pipeline, record)
    links = {
        "Training job": f"{base}/sagemaker/home?region={region}#/jobs/{job}",
        "Logs": f"{base}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{log_group}"
        f"$3FlogStreamNameFilter$3D{quote(job, safe='')}",
    }
    return _with_execution(links, base, region, pipeline, record)


def _with_execution(
    links: dict[str, str], base: str, region: str, pipeline: str, record: Mapping[str, Any]
) -> dict[str, str]:
    execution = record.get("pipeline_execution_id")
    if execution:
        links["Pipeline execution"] = (
            f"{base}/codesuite/codepipeline/pipelines/{pipeline}/executions/{execution}/timeline?region={region}"
        )
    return links


def _tuning_lines(record: Mapping[str, Any]) -> list[str]:
    """What a tuning job's email says about its trials and its best one."""
    tuning = record.get("tuning") or {}
    counts = record.get("trial_counts") or {}
    total = sum(int(v) for v in counts.values())
    trials = (
        f"{total} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
        if total
        else "none started yet"
    )
    if tuning.get("max_jobs"):
        trials += f"; at most {tuning['max_jobs']}, {tuning.get('max_parallel_jobs', 1)} at a time"
    if tuning.get("strategy"):
        trials += f", strategy {tuning['strategy']}"
    lines = [f"Trials:        {trials}"]
    searched = [
        f"{r['Name']} {'/'.join(r['Values'])}"
        if "Values" in r
        else f"{r['Name']} {r['MinValue']}..{r['MaxValue']}"
        for ranges in (tuning.get("parameter_ranges") or {}).values()
        for r in ranges
    ]
    if searched:
        lines.append(f"Searched:      {', '.join(sorted(searched))}")
    best = record.get("best_training_job")
    if best:
        value = record.get("objective_value")
        objective = f"{record.get('objective_metric') or tuning.get('objective_metric')} = " + (
            f"{float(value):.6g}" if value is not None else "?"
        )
        direction = tuning.get("objective_type")
        lines.append(f"Best job:      {best}, {objective}" + (f" ({direction})" if direction else ""))
    else:
        lines.append("Best job:      none yet")
    return lines


def _metric_lines(metrics: Mapping[str, Any] | None) -> list[str]:
    if not metrics:
        return ["  (none reported)"]
    width = max(len(name) for name in metrics)
    return [f"  {name:<{width}}  {float(value):.6g}" for name, value in sorted(metrics.items())]


def _model_lines(record: Mapping[str, Any]) -> list[str]:
    """The headline metric (test, else validation, else train: the least optimistic the run has) and what
    the container inferred about the model (`model_meta`: task, objective, classes), when known."""
    lines: list[str] = []
    found = headline(record.get("metrics"))
    if found:
        lines.append(f"Final metric:  {found[0]} = {found[1]:.6g}")
    meta = record.get("model_meta") or {}
    if meta.get("task"):
        objective = f", objective {meta['objective']}" if meta.get("objective") else ""
        lines.append(f"Task:          {meta['task']}{objective}")
    classes = meta.get("classes")
    if classes:
        count = int(meta.get("num_classes") or len(classes))
        shown = ", ".join(str(c) for c in classes)
        lines.append(f"Classes:       {count}: {shown}" + (" …" if count > len(classes) else ""))
    return lines


def body(region: str, pipeline: str, record: Mapping[str, Any]) -> str:
    status = str(record.get("status", "Unknown"))
    lines = [
        f"{_what(record)} job {record.get('job_name')} is {status}"
        + (
            f" ({record['secondary_status']})."
            if record.get("secondary_status") not in (None, status)
            else "."
        ),
        "",
        f"Status:        {status}",
    ]
    if record.get("failure_reason"):
        lines.append(f"Reason:        {record['failure_reason']}")
    if _is_tuning(record):
        lines += _tuning_lines(record)
    lines += [
        f"Commit:        {record.get('commit_id') or 'unknown'} on {record.get('branch') or '?'} ({record.get('repo') or '?'})",
        f"Triggered by:  {record.get('trigger') or 'unknown'}",
        f"Data:          version {record.get('data_version') or 'unknown'}"
        + (
            f", s3://{record['data_bucket']}/{record.get('data_prefix', '')}"
            if record.get("data_bucket")
            else ""
        ),
        f"Image:         {record.get('image_uri') or 'unknown'}"
        + (f" ({record['image_digest']})" if record.get("image_digest") else ""),
        f"Instance:      {record.get('instance_count') or 1} x {record.get('instance_type') or 'unknown'}"
        + (" per trial" if _is_tuning(record) else "")
        + (" (managed spot)" if record.get("use_spot") else ""),
        f"Duration:      {duration_text(duration_seconds(record))}",
        f"Est. cost:     {estimated_cost(record)}",
    ]
    spot = spot_line(record)
    if spot:
        lines.append(f"Spot:          {spot}")
    if record.get("model_artifact"):
        lines.append(f"Model:         {record['model_artifact']}")
    lines += _model_lines(record)
    lines += [
        "",
        "Metrics of the best job:" if _is_tuning(record) else "Metrics:",
        *_metric_lines(record.get("metrics")),
    ]
    hyperparameters = {**(record.get("hyperparameters") or {}), **(record.get("best_hyperparameters") or {})}
    if hyperparameters:
        title = (
            "Hyperparameters of the best job:" if record.get("best_hyperparameters") else "Hyperparameters:"
        )
        lines += ["", title, *(f"  {k} = {v}" for k, v in sorted(hyperparameters.items()))]
    lines += ["", "Links:"]
    lines += [f"  {name}: {url}" for name, url in console_links(region, pipeline, record).items()]
    lines += [
        "",
        f"Times (UTC): created {record.get('created_at') or '-'}, started {record.get('started_at') or '-'}, "
        f"ended {record.get('ended_at') or '-'}",
    ]
    return "\n".join(lines) + "\n"


def publish(topic_arn: str, project: str, env: str, pipeline: str, record: Mapping[str, Any]) -> str:
    """Send the email for this record's current status; returns the SNS message id."""
    return send(
        topic_arn,
        Email(
            subject=subject(project, env, record),
            body=body(aws.region(), pipeline, record),
            attributes={
                "event": EVENT_TRAINING,
                "status": str(record.get("status", "Unknown")),
                "job_name": str(record.get("job_name", "?")),
            },
        ),
    )


# -- after training: the quality gate, the registration and the approval decisions -----------------------
# Every email carries the message attributes `event` (training, quality-gate, registration, approval),
# `status` and `job_name`, and the package's `model_package_version` where there is one: subscribers can
# filter to, say, failed gates and rejections only.
EVENT_TRAINING = "training"
EVENT_GATE = "quality-gate"
EVENT_REGISTRATION = "registration"
EVENT_APPROVAL = "approval"


@dataclass(frozen=True)
class Email:
    subject: str
    body: str
    attributes: dict[str, str]


def send(topic_arn: str, email: Email) -> str:
    """Publish one email; returns the SNS message id."""
    response = aws.client("sns").publish(
        TopicArn=topic_arn,
        Subject=email.subject,
        Message=email.body,
        MessageAttributes={
            k: {"DataType": "String", "StringValue": v} for k, v in email.attributes.items() if v
        },
    )
    return str(response.get("MessageId", ""))


def _origin_lines(record: Mapping[str, Any]) -> list[str]:
    """Where the model came from: the same lines in every email about it."""
    return [
        f"Training job:  {record.get('job_name')}",
        f"Commit:        {record.get('commit_id') or 'unknown'} on {record.get('branch') or '?'} ({record.get('repo') or '?'})",
        f"Data:          version {record.get('data_version') or 'unknown'}"
        + (f", manifest {record['data_manifest']}" if record.get("data_manifest") else ""),
        f"Image:         {record.get('image_uri') or 'unknown'}"
        + (f" ({record['image_digest']})" if record.get("image_digest") else ""),
        f"Model:         {record.get('model_artifact') or 'unknown'}",
    ]


def _gate_lines(gate: Mapping[str, Any]) -> list[str]:
    if not gate:
        return ["Gate:          not evaluated"]
    direction = "lower is better" if gate.get("direction") == "minimize" else "higher is better"
    rule = f"{gate.get('metric')} ({direction}), at most {float(gate.get('max_regression', 0)) * 100:g}% worse than the approved model"
    if gate.get("floor") is not None:
        rule += f", floor {float(gate['floor']):.4g}"
    lines = [f"Gate:          {gate.get('status')}: {gate.get('reason')}", f"Rule:          {rule}"]
    if gate.get("baseline_package_arn"):
        lines.append(
            f"Approved model: v{gate.get('baseline_version')} ({gate.get('baseline_package_arn')}), "
            f"{gate.get('metric')} "
            + (
                f"{float(gate['baseline_value']):.4g}"
                if gate.get("baseline_value") is not None
                else "not reported"
            )
            + (f", training job {gate['baseline_training_job']}" if gate.get("baseline_training_job") else "")
        )
    else:
        lines.append("Approved model: none yet")
    return lines


def _data_note(record: Mapping[str, Any], gate: Mapping[str, Any]) -> list[str]:
    """Recorded metrics compare like with like only on the same validation data: say when they do not."""
    ours, theirs = record.get("data_version"), gate.get("baseline_data_version")
    if ours and theirs and ours != theirs:
        return [
            "",
            f"Note: the approved model was measured on data v{theirs}, this one on data v{ours}: the "
            "validation sets differ, so the comparison is indicative.",
        ]
    return []


def _package_subject(project: str, env: str, what: str, record: Mapping[str, Any]) -> str:
    sha = short(record.get("commit_id"), SHORT_SHA)
    return fit_subject(f"[{project}/{env}] {what}: ", str(record.get("job_name", "?")), (f" ({sha})", ""))


def gate_failed_email(project: str, env: str, pipeline: str, record: Mapping[str, Any]) -> Email:
    gate = record.get("gate") or {}
    lines = [
        f"The quality gate stopped training job {record.get('job_name')}: the model is not registered.",
        "",
        f"Reason:        {gate.get('reason')}",
        *_gate_lines(gate)[1:],
        "",
        *_origin_lines(record),
        *_data_note(record, gate),
        "",
        "Metrics:",
        *_metric_lines(record.get("metrics")),
        "",
        "Links:",
        *(f"  {name}: {url}" for name, url in console_links(aws.region(), pipeline, record).items()),
    ]
    return Email(
        subject=_package_subject(project, env, "Quality gate failed", record),
        body="\n".join(lines) + "\n",
        attributes={"event": EVENT_GATE, "status": "Failed", "job_name": str(record.get("job_name", "?"))},
    )


def registered_email(project: str, env: str, pipeline: str, record: Mapping[str, Any]) -> Email:
    """The package awaits a decision: the email says how to make it."""
    arn = str(record.get("model_package_arn"))
    version = str(record.get("model_package_version", "?"))
    lines = [
        f"Model package v{version} of group {record.get('model_package_group')} is registered and awaiting approval.",
        "",
        f"Package:       {arn}",
        *_gate_lines(record.get("gate") or {}),
        "",
        *_origin_lines(record),
        *_data_note(record, record.get("gate") or {}),
        "",
        "Metrics:",
        *_metric_lines(record.get("metrics")),
        "",
        "To approve (the deploy stage listens for approvals):",
        f"  {model_package.approve_command(arn)}",
        "To reject:",
        f"  {model_package.reject_command(arn)}",
        "Or with the AWS CLI:",
        f"  {model_package.cli_command(arn, model_package.APPROVED)}",
        f"Or in SageMaker Studio: Models > Registered models > {record.get('model_package_group')} > version {version}.",
        "",
        "Links:",
        *(f"  {name}: {url}" for name, url in console_links(aws.region(), pipeline, record).items()),
    ]
    return Email(
        subject=_package_subject(project, env, f"Model v{version} awaiting approval", record),
        body="\n".join(lines) + "\n",
        attributes={
            "event": EVENT_REGISTRATION,
            "status": model_package.PENDING,
            "job_name": str(record.get("job_name", "?")),
            "model_package_version": version,
        },
    )


def decision_email(
    project: str, env: str, pipeline: str, record: Mapping[str, Any], decision: Mapping[str, Any]
) -> Email:
    """One approval decision: who, when, why, and which model."""
    status = str(decision.get("status"))
    version = str(decision.get("model_package_version", "?"))
    lines = [
        f"Model package v{version} of group {record.get('model_package_group')} was {status.lower()} "
        f"by {decision.get('decided_by')}.",
        "",
        f"Decision:      {status}",
        f"By:            {decision.get('decided_by')}",
        f"At (UTC):      {decision.get('decided_at')}",
        f"Reason:        {decision.get('reason') or '(none given)'}",
        f"Package:       {decision.get('model_package_arn')}",
        *_gate_lines(record.get("gate") or {}),
        "",
        *_origin_lines(record),
        "",
        "Metrics:",
        *_metric_lines(record.get("metrics")),
        "",
        "Links:",
        *(f"  {name}: {url}" for name, url in console_links(aws.region(), pipeline, record).items()),
    ]
    return Email(
        subject=_package_subject(project, env, f"Model v{version} {status}", record),
        body="\n".join(lines) + "\n",
        attributes={
            "event": EVENT_APPROVAL,
            "status": status,
            "job_name": str(record.get("job_name", "?")),
            "model_package_version": version,
        },
    )
