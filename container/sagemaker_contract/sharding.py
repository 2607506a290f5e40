"""The train channel in a multi-host job: this host's share of it, encoded the same way on every host.

Each host reads only its share (cluster.py has the rules), so what one host would decide from its rows alone
(a column's kind, a text column's categories and their codes, the class labels) is agreed by all hosts
through the cluster's allgather before the model sees a row: a category that only host 2 has gets the same
code on every host, and the task is decided from every host's target values.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sagemaker_contract import cluster as clusters
from sagemaker_contract import data
from sagemaker_contract.cells import BOOL, CATEGORICAL, NUMERIC
from sagemaker_contract.cluster import Cluster
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset
from sagemaker_contract.sources import channel_files
from sagemaker_contract.tasks import MAX_CLASSES, Target

KIND_ORDER = {NUMERIC: 0, BOOL: 1, CATEGORICAL: 2}
# Distinct target values each host sends for the task decision: enough to tell class codes and "two values"
# from a number to predict (tasks.py needs at most MAX_CLASSES + 1 of them).
TARGET_VALUES_LIMIT = MAX_CLASSES + 1


def train_layout(directory: Path, cluster: Cluster, content_type: str | None) -> data.Layout:
    """This host's share of the train channel's files and rows. Raises UserError with a sentence when a host
    has no files (ShardedByS3Key with more hosts than files)."""
    files = [path for path in channel_files(directory) if path.stat().st_size > 0]
    counts = cluster.allgather(len(files))
    if cluster.train_distribution == "ShardedByS3Key" and min(counts) == 0:
        empty = [host for host, count in zip(cluster.hosts, counts, strict=True) if count == 0]
        raise UserError(
            f"{cluster.world_size} hosts but only {sum(counts)} training files under the train prefix: "
            f"ShardedByS3Key gives each host whole files, and {', '.join(empty)} got none. Split the training "
            f"data into at least {cluster.world_size} files, use fewer instances, or set "
            "training_data_distribution to FullyReplicated."
        )
    picked = clusters.plan_files(len(files), cluster.world_size, cluster.rank, cluster.train_distribution)
    if picked is not None:
        layout = data.inspect_channel(directory, "train", content_type, [files[i] for i in picked])
        cluster.shard = (
            f"its own {len(files)} files (ShardedByS3Key)"
            if cluster.train_distribution == "ShardedByS3Key"
            else clusters.describe_files(picked, len(files))
        )
        return layout
    # Fewer files than hosts: every host has them all (FullyReplicated) and keeps a range of rows.
    layout = data.inspect_channel(directory, "train", content_type, files)
    counts = [source.rows_estimate for source in layout.sources]
    window = clusters.row_window(sum(counts), cluster.world_size, cluster.rank)
    shown = f"{window[0]:,} to {'the end' if window[1] > sum(counts) else f'{window[1]:,}'}"
    cluster.shard = (
        f"rows {shown} of {len(layout.sources)} file(s) ({cluster.world_size} hosts, fewer files than hosts: "
        "each host parses the files and keeps its rows)"
    )
    return data.with_windows(layout, clusters.file_windows(counts, window))


def agree_kinds(cluster: Cluster, layout: data.Layout) -> dict[str, str]:
    """Every column's kind as the most general any host saw (a column that is text on one host is text)."""
    everyone = cluster.allgather({"names": layout.names, "kinds": layout.kinds()})
    for host, theirs in zip(cluster.hosts, everyone, strict=True):
        if theirs["names"] != layout.names:
            raise UserError(
                f"The train files of host {host} have the columns {', '.join(theirs['names'][:10])}, but this "
                f"host's have {', '.join(layout.names[:10])}. All training files need the same columns."
            )
    merged = dict.fromkeys(layout.names, NUMERIC)
    for theirs in everyone:
        for name, kind in theirs["kinds"].items():
            if KIND_ORDER[kind] > KIND_ORDER[merged[name]]:
                merged[name] = kind
    return merged


def agree_encoding(
    cluster: Cluster, train: Dataset, target: Target
) -> tuple[Target, np.ndarray, dict[str, Any]]:
    """Recode this host's categories and text labels to codes every host shares (in place), and gather
    the target's distinct values for the task decision.

    Returns the shared target, the distinct target values of all hosts (for tasks.decide) and facts for the
    log and model-meta.json (rows per host)."""
    values = np.unique(train.y) if target.kind != CATEGORICAL else np.empty(0, dtype=np.float32)
    everyone = cluster.allgather(
        {
            "rows": int(train.x.shape[0]),
            "categories": train.categories,
            "labels": target.categories,
            "values": [float(v) for v in values[:TARGET_VALUES_LIMIT]],
            "more_values": bool(values.size > TARGET_VALUES_LIMIT),
        }
    )
    for i, name in enumerate(train.feature_names):
        if name in train.categories:
            shared = sorted({c for theirs in everyone for c in theirs["categories"].get(name, [])})
            _recode(train.x[:, i], train.categories[name], shared)
            train.categories[name] = shared
    if target.kind == CATEGORICAL:
        labels = sorted({c for theirs in everyone for c in (theirs["labels"] or [])})
        _recode(train.y, target.categories or [], labels)
        target = replace(target, categories=labels)
    all_values = np.unique(np.asarray([v for theirs in everyone for v in theirs["values"]], dtype=np.float32))
    facts = {
        "rows": [theirs["rows"] for theirs in everyone],
        "more_values": any(theirs["more_values"] for theirs in everyone),
    }
    if sum(facts["rows"]) == 0:
        raise UserError("The 'train' channel has no data rows on any host: its files hold only a header.")
    return target, all_values, facts


def _recode(column: np.ndarray, local: list[str], shared: list[str]) -> None:
    """Codes into `local` become codes into `shared` (a superset), in place; NaN stays missing."""
    if local == shared:
        return
    position = {value: code for code, value in enumerate(shared)}
    remap = np.asarray([position[value] for value in local], dtype=np.float32)
    valid = ~np.isnan(column)
    column[valid] = remap[column[valid].astype(np.int64)]
