"""`mlpipe-runs`: list training runs from the audit table.

Works against real AWS (default credentials and region) and against the local emulator
(`--endpoint-url`). Every listing is a DynamoDB Query on one of the table's indexes, never a Scan:
`--commit` uses `by-commit`, `--status` uses `by-status`, and the unfiltered listing queries
`by-status` once per status and merges newest first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common.audit import STATUSES, from_item
from pipeline_common.notify import duration_seconds, format_duration

COMMIT_INDEX = "by-commit"
STATUS_INDEX = "by-status"
FULL_SHA_LENGTH = 40


class RunsError(Exception):
    """A problem the user can fix; printed as one line."""


@dataclass(frozen=True)
class RunsQuery:
    status: str | None
    commit: str | None
    limit: int


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlpipe-runs", description="List training runs from the audit table."
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
    """The first validation metric, else the first train metric: enough to compare runs at a glance."""
    if not metrics:
        return "-"
    for prefix in ("validation:", "train:"):
        names = sorted(name for name in metrics if name.startswith(prefix))
        if names:
            return f"{names[0]}={float(metrics[names[0]]):.4g}"
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
        ]
        for run in runs
    ]


def print_table(runs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Training runs ({len(runs)})")
    for column in ("job", "status", "commit", "data version", "metric", "started", "duration"):
        table.add_column(column, no_wrap=True)
    for row in table_rows(runs):
        table.add_row(*row)
    # Piped output keeps whole job names rather than squeezing to 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        commit = resolve_commit(args.commit) if args.commit else None
        session = boto3.session.Session(region_name=args.region)
        dynamodb = session.client(
            "dynamodb", **({"endpoint_url": args.endpoint_url} if args.endpoint_url else {})
        )
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


if __name__ == "__main__":
    sys.exit(main())
