"""`mlpipe-runs`: list training runs from the audit table; approve or reject a model package; show where a
model came from, and which one each endpoint serves.

    mlpipe-runs [--status S] [--commit SHA] [--limit N] [--json]         list runs (the default)
    mlpipe-runs approve <package ARN or version> --reason "..."          approve a registered model
    mlpipe-runs reject <package ARN or version> --reason "..."           reject it
    mlpipe-runs lineage <job, package ARN or version, or commit> [--json] commit → ... → approval
    mlpipe-runs endpoints [--limit N] [--json]                           each endpoint's package now

Works against real AWS (default credentials and region) and against the local emulator
(`--endpoint-url`). Every listing is a DynamoDB Query on one of the table's indexes, never a Scan:
`--commit` uses `by-commit`, `--status` uses `by-status`, and the unfiltered listing queries
`by-status` once per status and merges newest first. `lineage` reads one record (GetItem, or a `by-commit`
query); approve and reject are UpdateModelPackage calls, made as whoever runs the command: that identity
is what the audit trail records as the approver. `endpoints` queries `by-status` for the Completed runs,
newest first, and reads their `deployment:*` entries (mlpipe/cli/endpoints.py): the audit trail, not the
endpoints themselves, so it answers the same after a local run, whose endpoints are gone.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common import model_package
from pipeline_common.audit import STATUSES, from_item
from pipeline_common.metrics import headline
from pipeline_common.notify import duration_seconds, format_duration

from mlpipe.cli.endpoints import endpoint_views
from mlpipe.cli.lineage import lineage, render

COMMIT_INDEX = "by-commit"
STATUS_INDEX = "by-status"
FULL_SHA_LENGTH = 40
COMPLETED = "Completed"
SUBCOMMANDS = ("approve", "reject", "lineage", "endpoints")
ENDPOINTS_LIMIT = 100
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


class RunsError(Exception):
    """A problem the user can fix; printed as one line."""


@dataclass(frozen=True)
class RunsQuery:
    status: str | None
    commit: str | None
    limit: int


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlpipe-runs",
        description="List training runs from the audit table.",
        epilog="subcommands: approve, reject, lineage, endpoints (each answers --help); "
        "`mlpipe-runs endpoints` shows which package each endpoint serves now, and its lineage",
    )
    parser.add_argument("--status", choices=STATUSES, help="only runs in this status")
    parser.add_argument("--commit", help="only runs of this commit (full SHA, or a short one git resolves)")
    parser.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    parser.add_argument("--table", help="audit table name (default: found by its key schema and indexes)")
    parser.add_argument("--endpoint-url", help="AWS endpoint, e.g. the local emulator http://127.0.0.1:PORT")
    parser.add_argument("--region", help="AWS region (default: from your AWS configuration)")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def resolve_commit(commit: str) -> str:
    """The audit table keys full SHAs; expand a short one through the local git repository."""
    if len(commit) == FULL_SHA_LENGTH:
        return commit.lower()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        out = None
    if out is None or out.returncode != 0:
        raise RunsError(f"--commit {commit!r}: give the full 40-character SHA (git cannot resolve it here)")
    return out.stdout.strip()


def find_audit_table(dynamodb: Any) -> str:
    """The audit table is the one keyed on job_name with the by-commit and by-status indexes."""
    candidates = []
    for page in dynamodb.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            table = dynamodb.describe_table(TableName=name)["Table"]
            keys = [k["AttributeName"] for k in table["KeySchema"] if k["KeyType"] == "HASH"]
            indexes = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
            if keys == ["job_name"] and {COMMIT_INDEX, STATUS_INDEX} <= indexes:
                candidates.append(name)
    if not candidates:
        raise RunsError("no audit table found: pass --table, or check --endpoint-url and --region")
    if len(candidates) > 1:
        raise RunsError(f"several audit tables found ({', '.join(candidates)}): pass --table")
    return candidates[0]


def query_runs(dynamodb: Any, table: str, query: RunsQuery) -> list[dict[str, Any]]:
    if query.commit:
        request: dict[str, Any] = {
            "KeyConditionExpression": "commit_id = :commit",
            "ExpressionAttributeValues": {":commit": {"S": query.commit}},
        }
        if query.status:
            request["FilterExpression"] = "#status = :status"
            request["ExpressionAttributeNames"] = {"#status": "status"}
            request["ExpressionAttributeValues"][":status"] = {"S": query.status}
        return _query_index(dynamodb, table, COMMIT_INDEX, request, query.limit)
    runs: list[dict[str, Any]] = []
    for status in [query.status] if query.status else STATUSES:
        request = {
            "KeyConditionExpression": "#status = :status",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":status": {"S": status}},
        }
        runs.extend(_query_index(dynamodb, table, STATUS_INDEX, request, query.limit))
    runs.sort(key=lambda run: str(run.get("updated_at", "")), reverse=True)
    return runs[: query.limit]


def _query_index(
    dynamodb: Any, table: str, index: str, request: dict[str, Any], limit: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request = {"TableName": table, "IndexName": index, "ScanIndexForward": False, **request}
    while len(items) < limit:
        page = dynamodb.query(**request)
        items.extend(from_item(item) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items[:limit]


def headline_metric(metrics: dict[str, Any] | None) -> str:
    """The first metric of the least optimistic channel (test, else validation, else train): enough to
    compare runs at a glance."""
    if not metrics:
        return "-"
    found = headline(metrics)
    if found:
        return f"{found[0]}={found[1]:.4g}"
    name = sorted(metrics)[0]
    return f"{name}={metrics[name]}"


def duration_text(run: dict[str, Any]) -> str:
    seconds = duration_seconds(run)
    return "-" if seconds is None else format_duration(seconds)


def short_time(stamp: str | None) -> str:
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M") if stamp else "-"
    except ValueError:
        return str(stamp)


def status_text(run: dict[str, Any]) -> str:
    """The status, and what kind of run it was when it was not one training job of its own."""
    status = str(run.get("status", "?"))
    if run.get("cache_hit_of"):
        return f"{status} (cache hit of {run['cache_hit_of']})"
    if run.get("kind") == "tuning":
        return f"{status} (tuning)"
    if run.get("tuning_job"):
        return f"{status} (trial)"
    return status


def table_rows(runs: Iterable[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(run.get("job_name", "?")),
            status_text(run),
            str(run.get("commit_id", ""))[:7] or "-",
            str(run.get("data_version", "-")),
            headline_metric(run.get("metrics")),
            short_time(run.get("started_at") or run.get("created_at")),
            duration_text(run),
            str(run.get("gate_status") or "-"),
            f"v{run['model_package_version']}" if run.get("model_package_version") else "-",
            str(run.get("approval_status") or "-"),
        ]
        for run in runs
    ]


def print_table(runs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Training runs ({len(runs)})")
    columns = (
        "job",
        "status",
        "commit",
        "data version",
        "metric",
        "started",
        "duration",
        "gate",
        "package",
        "approval",
    )
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in table_rows(runs):
        table.add_row(*row)
    # Piped output keeps whole job names rather than squeezing to 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in SUBCOMMANDS:
        return subcommand(arguments[0], arguments[1:])
    args = parse_args(arguments)
    try:
        commit = resolve_commit(args.commit) if args.commit else None
        dynamodb = _session(args).client("dynamodb", **_endpoint(args))
        table = args.table or find_audit_table(dynamodb)
        runs = query_runs(dynamodb, table, RunsQuery(args.status, commit, args.limit))
    except RunsError as error:
        print(f"mlpipe-runs: {error}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        print(f"mlpipe-runs: AWS error: {error}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(runs, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
    else:
        print_table(runs)
    return 0


# -- approve, reject, lineage --------------------------------------------------------------------------------
def _session(args: argparse.Namespace) -> Any:
    return boto3.session.Session(region_name=args.region)


def _endpoint(args: argparse.Namespace) -> dict[str, str]:
    return {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}


def parse_subcommand(command: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"mlpipe-runs {command}")
    if command == "endpoints":
        parser.description = (
            "Which package each endpoint (staging, production) serves now, from the audit trail's "
            "deployments, with the last failed or rolled back attempt and a deployment under way."
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=ENDPOINTS_LIMIT,
            help=f"read the N most recently updated Completed runs (default {ENDPOINTS_LIMIT}; a deployment "
            "updates its run's record, so the runs behind the endpoints are among the newest)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print JSON, with each current package's lineage"
        )
        parser.add_argument("--table", help="audit table name (default: found by its key schema and indexes)")
    elif command == "lineage":
        parser.description = (
            "Where a model came from: commit, image, data, job, metrics, gate, package, approval."
        )
        parser.add_argument("target", help="a training job name, a model package ARN or version, or a commit")
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        parser.add_argument("--table", help="audit table name (default: found by its key schema and indexes)")
    else:
        parser.description = f"{command.capitalize()} a registered model package, with the reason recorded."
        parser.add_argument("package", help="the model package's ARN, or its version in the group")
        parser.add_argument(
            "--reason", required=True, help="why (recorded as the package's ApprovalDescription)"
        )
    if command != "endpoints":
        parser.add_argument(
            "--group", help="model package group (default: the only one in the account and region)"
        )
    parser.add_argument(
        "--endpoint-url", help="AWS endpoint, e.g. the local run's gateway http://127.0.0.1:PORT"
    )
    parser.add_argument("--region", help="AWS region (default: from your AWS configuration)")
    args = parser.parse_args(list(argv))
    if command in ("approve", "reject") and not args.reason.strip():
        parser.error("--reason must say why")
    if command == "endpoints" and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def find_group(sagemaker: Any) -> str:
    groups = [
        group["ModelPackageGroupName"]
        for page in sagemaker.get_paginator("list_model_package_groups").paginate()
        for group in page["ModelPackageGroupSummaryList"]
    ]
    if not groups:
        raise RunsError("no model package group found: pass --group, or check --endpoint-url and --region")
    if len(groups) > 1:
        raise RunsError(f"several model package groups found ({', '.join(sorted(groups))}): pass --group")
    return str(groups[0])


def resolve_package(sagemaker: Any, target: str, group: str | None) -> str:
    """A package ARN from an ARN or a version number (in --group, or the only group there is)."""
    if model_package.parse_package_arn(target):
        return target
    if not target.isdigit():
        raise RunsError(f"{target!r} is neither a model package ARN nor a version number")
    group = group or find_group(sagemaker)
    for summary in model_package.summaries(sagemaker, group):
        if int(summary["ModelPackageVersion"]) == int(target):
            return str(summary["ModelPackageArn"])
    raise RunsError(f"model package group {group} has no version {target}")


def decide(sagemaker: Any, arn: str, status: str, reason: str) -> dict[str, Any]:
    """Approve or reject a package (UpdateModelPackage, as the caller). Returns the package afterwards;
    a package already in that status is left as it is."""
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    if package.get("ModelApprovalStatus") != status:
        sagemaker.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=reason
        )
        package = sagemaker.describe_model_package(ModelPackageName=arn)
    return dict(package)


def lineage_records(
    dynamodb: Any, sagemaker: Any, table: str, target: str, group: str | None
) -> list[dict[str, Any]]:
    """The records a lineage target names: a job, a package (ARN or version), or a commit's runs."""
    item = dynamodb.get_item(TableName=table, Key={"job_name": {"S": target}}, ConsistentRead=True).get(
        "Item"
    )
    if item:
        return [from_item(item)]
    if model_package.parse_package_arn(target) or target.isdigit():
        package = sagemaker.describe_model_package(ModelPackageName=resolve_package(sagemaker, target, group))
        job = (package.get("CustomerMetadataProperties") or {}).get(model_package.META_TRAINING_JOB)
        job = job or model_package.job_of_description(package.get("ModelPackageDescription"))
        item = dynamodb.get_item(TableName=table, Key={"job_name": {"S": str(job)}}, ConsistentRead=True).get(
            "Item"
        )
        if not item:
            raise RunsError(
                f"{package['ModelPackageArn']} names training job {job}, which has no audit record"
            )
        return [from_item(item)]
    if _COMMIT.match(target.lower()):
        runs = query_runs(dynamodb, table, RunsQuery(None, resolve_commit(target), 100))
        if runs:
            return runs
    raise RunsError(
        f"no run found for {target!r} (a training job name, a model package ARN or version, or a commit)"
    )


def endpoint_rows(views: Iterable[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for view in views:
        current = view["current"] or {}
        rows.append(
            [
                view["endpoint"],
                view["stage"],
                f"v{current['model_package_version']}" if current else "-",
                str(current.get("training_job") or "-"),
                str(current.get("commit_id") or "")[:7] or "-",
                short_time(current.get("ended_at")) if current else "-",
                attempt_text(view),
            ]
        )
    return rows


def attempt_text(view: dict[str, Any]) -> str:
    """What happened to the endpoint after its current package: a deployment under way, and the last
    attempt that failed or was rolled back (with the alarm that fired)."""
    parts = []
    if view["deploying"]:
        deploying = view["deploying"]
        parts.append(
            f"deploying v{deploying['model_package_version']} since {short_time(deploying.get('started_at'))}"
        )
    if view["last_attempt"]:
        attempt = view["last_attempt"]
        text = (
            f"v{attempt['model_package_version']} {attempt.get('status')} "
            f"{short_time(attempt.get('ended_at') or attempt.get('started_at'))}"
        )
        if attempt.get("alarm"):
            text += f" (alarm {attempt['alarm']})"
        parts.append(text)
    return "; ".join(parts) or "-"


def print_endpoints(views: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Endpoints ({len(views)})")
    for column in ("endpoint", "stage", "package", "training job", "commit", "since", "last attempt"):
        table.add_column(column, no_wrap=True)
    for row in endpoint_rows(views):
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def endpoints(args: argparse.Namespace) -> int:
    """`mlpipe-runs endpoints`: the Completed runs' deployments, one row (or JSON object) per endpoint."""
    dynamodb = _session(args).client("dynamodb", **_endpoint(args))
    table = args.table or find_audit_table(dynamodb)
    runs = query_runs(dynamodb, table, RunsQuery(COMPLETED, None, args.limit))
    views = endpoint_views(runs)
    if args.json:
        json.dump(views, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
    elif not views:
        print(f"no deployment recorded in audit table {table} (Completed runs read: {len(runs)})")
    else:
        print_endpoints(views)
    return 0


def subcommand(command: str, argv: Sequence[str]) -> int:
    args = parse_subcommand(command, argv)
    session = _session(args)
    try:
        if command == "endpoints":
            return endpoints(args)
        sagemaker = session.client("sagemaker", **_endpoint(args))
        if command == "lineage":
            dynamodb = session.client("dynamodb", **_endpoint(args))
            table = args.table or find_audit_table(dynamodb)
            chains = [
                lineage(r) for r in lineage_records(dynamodb, sagemaker, table, args.target, args.group)
            ]
            if args.json:
                json.dump(
                    chains if len(chains) > 1 else chains[0],
                    sys.stdout,
                    indent=2,
                    sort_keys=True,
                    default=str,
                )
                print()
            else:
                print("\n\n".join(render(chain) for chain in chains))
            return 0
        status = model_package.APPROVED if command == "approve" else model_package.REJECTED
        arn = resolve_package(sagemaker, args.package, args.group)
        package = decide(sagemaker, arn, status, args.reason.strip())
    except RunsError as error:
        print(f"mlpipe-runs: {error}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        print(f"mlpipe-runs: AWS error: {error}", file=sys.stderr)
        return 1
    print(
        f"model package v{package.get('ModelPackageVersion')} is {package.get('ModelApprovalStatus')}: {arn}\n"
        f"  by {model_package.decided_by(package)}: {package.get('ApprovalDescription') or ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
