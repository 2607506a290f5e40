"""The audit table's schema as the README's interface contract states it, for tests that create the table.

tests/stacks asserts the synthesized template has exactly these keys and indexes, so the tables the
Lambda and `runs` tests create cannot drift from the deployed one.
"""

from __future__ import annotations

from typing import Any

AUDIT_TABLE_SCHEMA: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "job_name", "KeyType": "HASH"}],
    "AttributeDefinitions": [
        {"AttributeName": attribute, "AttributeType": "S"}
        for attribute in ("job_name", "commit_id", "created_at", "status", "updated_at", "cache_key")
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by-commit",
            "KeySchema": [
                {"AttributeName": "commit_id", "KeyType": "HASH"},
                {"AttributeName": "created_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": "by-status",
            "KeySchema": [
                {"AttributeName": "status", "KeyType": "HASH"},
                {"AttributeName": "updated_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": "by-cache-key",
            "KeySchema": [
                {"AttributeName": "cache_key", "KeyType": "HASH"},
                {"AttributeName": "created_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
