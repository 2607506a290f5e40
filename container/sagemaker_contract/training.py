"""`train`: read the config and channels, fit the model, print metric lines, write the model atomically.

On any error: one paragraph in /opt/ml/output/failure (only if the file does not exist yet, so the first,
most specific reason wins, as in the SageMaker training toolkit) and exit code 1. The model directory is
only written after everything succeeded, through a staging folder, so a failure never leaves a partial model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from sagemaker_contract import cluster as clusters
from sagemaker_contract import data, golden, hyperparameters, memory, sharding, tasks
from sagemaker_contract.cluster import PeerFailure
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset, ModelInterfaceError, ModelPlugin, load_model_plugin
from sagemaker_contract.meta import META_FILE, ModelMeta
from sagemaker_contract.paths import OptMl

METRIC_CHANNELS = ("train", "validation", "test")
FINAL_CHANNEL_ORDER = ("test", "validation", "train")  # the channel model-meta.json's final metrics come from
MAX_FAILURE_CHARS = 1024  # SageMaker truncates FailureReason here
_distributed = False  # this process joined other hosts (see hard_exit_needed)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def metric_line(channel: str, name: str, value: float) -> str:
    """The one documented format: `METRIC <channel>:<name>=<value>` (MetricDefinitions regexes match it)."""
    return f"METRIC {channel}:{name}={value:.6g}"


def write_failure(opt: OptMl, reason: str) -> None:
    """First reason wins; one paragraph."""
    paragraph = " ".join(reason.split())[:MAX_FAILURE_CHARS]
    try:
        opt.output_dir.mkdir(parents=True, exist_ok=True)
        with opt.failure_file.open("x") as handle:
            handle.write(paragraph + "\n")
        opt.failure_file.chmod(0o644)
    except FileExistsError:
        pass
    except OSError as error:
        log(f"could not write the failure file {opt.failure_file}: {error}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text() or "{}")
    except ValueError as error:
        raise UserError(f"{what} ({path.name}) is not valid JSON: {error}.") from None
    if not isinstance(value, dict):
        raise UserError(f"{what} ({path.name}) must be a JSON object.")
    return value


def _channel_dir(opt: OptMl, name: str, config: dict[str, Any], required: bool) -> Path | None:
    directory = opt.channel(name)
    if directory.is_dir():
        mode = (config.get(name) or {}).get("TrainingInputMode", "File")
        if mode == "Pipe":
            raise UserError(
                f"The '{name}' channel uses Pipe input mode, which this container does not support. Use File or FastFile."
            )
        return directory
    if not required:
        return None
    listed = f" The job's channels are: {', '.join(sorted(config))}." if config else ""
    raise UserError(
        f"The training job has no '{name}' channel (no folder {directory}).{listed} "
        f"Add an input channel named '{name}' pointing at your training data (CSV or Parquet) in S3."
    )


def _make_readable(path: Path) -> None:
    """Readable by the host and by the non-root serving user."""
    path.chmod(0o755 if path.is_dir() else 0o644)
    if path.is_dir():
        for child in path.rglob("*"):
            child.chmod(0o755 if child.is_dir() else 0o644)


def save_model_atomically(plugin: ModelPlugin, model: Any, meta: ModelMeta, model_dir: Path) -> None:
    """Save into a staging folder next to the model, then move the files in: never a half-written model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        plugin.save(model, staging)
        if (staging / META_FILE).exists():
            raise ModelInterfaceError(
                f"The model's save() wrote {META_FILE}, a name the contract keeps for itself; use another name."
            )
        meta.write(staging)
        for path in sorted(staging.iterdir()):
            _make_readable(path)
            os.replace(path, model_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _layout(opt: OptMl, name: str, input_config: dict[str, Any], required: bool) -> data.Layout | None:
    directory = _channel_dir(opt, name, input_config, required=required)
    if directory is None:
        return None
    return data.inspect_channel(directory, name, data.channel_content_types(input_config).get(name))


def _check_memory(
    plugin: ModelPlugin, params: dict[str, Any], columns: data.Columns, layouts: list[data.Layout | None]
) -> None:
    """Estimate before allocating: an out-of-memory kill leaves SageMaker no failure reason at all."""
    present = [layout for layout in layouts if layout is not None]
    rows = sum(layout.rows for layout in present)
    features = len(columns.features)
    data_bytes = rows * (features + 1) * 4  # the float32 matrices of every channel
    # Parse buffers: a few blocks in flight; on the wide path, one row as Python strings (~60 bytes a cell).
    parse_bytes = 64 * 2**20 + (120 * len(columns.names) if present[0].wide else 0)
    model_bytes = plugin.estimate_memory(present[0].rows, features, params)
    need = data_bytes + parse_bytes + model_bytes
    available = memory.available_bytes()
    log(
        f"memory: about {memory.text(need)} needed ({memory.text(data_bytes)} data, {memory.text(model_bytes)} "
        f"model), {memory.text(available)} available"
    )
    if need > available:
        raise UserError(
            f"Training needs an estimated {memory.text(need)} of memory ({rows:,} rows x {features:,} features: "
            f"{memory.text(data_bytes)} for the data and {memory.text(model_bytes)}, the model's own estimate) "
            f"but the instance has {memory.text(available)} available. Use an instance type with more memory, "
            "fewer rows or columns, or model settings that need less memory."
        )


def run(opt: OptMl) -> None:
    started = time.perf_counter()
    plugin = load_model_plugin()  # checked once, before anything else: a broken model fails in a second
    raw = hyperparameters.read(opt.hyperparameters)
    params = hyperparameters.parse(raw, plugin.hyperparameters)
    input_config = _read_json(opt.inputdataconfig, "The input data configuration")
    resources = _read_json(opt.resourceconfig, "The resource configuration")
    cluster = clusters.from_config(resources, input_config)
    log(
        f"host {cluster.current_host} of {cluster.world_size}"
        + (f" (leader {cluster.leader}, rank {cluster.rank})" if cluster.distributed else "")
    )
    log(f"model module: {plugin.name} ({plugin.manifest.get('name', '?')})")
    if cluster.distributed and not plugin.supports_distributed:
        raise UserError(
            f"This job has {cluster.world_size} hosts, but the model module '{plugin.name}' "
            f"({plugin.manifest.get('name', '?')}) trains on one host only: it has no fit_distributed(). "
            "Set training_instance_count to 1, or implement fit_distributed (container/README.md, "
            "'Bringing your own model')."
        )
    if not cluster.distributed:
        _train(opt, plugin, params, input_config, cluster, started)
        return
    cluster.exchange = clusters.Exchange.connect(cluster)
    global _distributed
    _distributed = True
    try:
        _train(opt, plugin, params, input_config, cluster, started)
    except PeerFailure as error:
        error.leader = cluster.is_leader
        raise
    except BaseException as error:
        if not getattr(error, "reported", False):  # whoever waits for this host learns why it stops
            cluster.exchange.abort(_reason(error, plugin))
        raise
    finally:
        cluster.exchange.close()


def _reason(error: BaseException, plugin: ModelPlugin) -> str:
    if isinstance(error, plugin.errors):
        return str(error)
    return f"{type(error).__name__}: {first_line(error)}"


def _train(
    opt: OptMl,
    plugin: ModelPlugin,
    params: dict[str, Any],
    input_config: dict[str, Any],
    cluster: clusters.Cluster,
    started: float,
) -> None:
    log(f"hyperparameters: {json.dumps({k: v for k, v in params.items() if v is not None})}")
    task_hint = plugin.infer_task(params)  # before any data: a model may refuse its settings up front

    if cluster.distributed:
        directory = _channel_dir(opt, "train", input_config, required=True)
        assert directory is not None
        content_type = data.channel_content_types(input_config).get("train")
        train_layout = sharding.train_layout(directory, cluster, content_type)
        log(f"train data on this host: {cluster.shard}")
        columns = data.plan_columns(
            train_layout, params["target"], sharding.agree_kinds(cluster, train_layout)
        )
    else:
        layout = _layout(opt, "train", input_config, required=True)
        assert layout is not None
        train_layout = layout
        columns = data.plan_columns(train_layout, params["target"])
    for note in columns.notes:
        log(f"note: {note}")
    # validation: early stopping and model selection (every host: a distributed model evaluates it across hosts);
    # test: the final metrics, on rows nothing else saw (the leader alone reports metrics).
    wanted = ("validation", "test") if cluster.is_leader else ("validation",)
    others = {name: _layout(opt, name, input_config, required=False) for name in wanted}
    for layout in others.values():
        if layout is not None:
            data.check_same_columns(layout, columns)

    _check_memory(plugin, params, columns, [train_layout, *others.values()])
    train, train_target = data.read_channel(train_layout, columns, allow_empty=cluster.distributed)
    log(f"train: {data.describe(train)}; target '{train.target_name}'")
    task_values = train.y
    facts: dict[str, Any] = {"rows": [int(train.x.shape[0])], "more_values": False}
    if cluster.distributed:
        train_target, task_values, facts = sharding.agree_encoding(cluster, train, train_target)
        log(f"train rows per host: {dict(zip(cluster.hosts, facts['rows'], strict=True))}")
    # The other channels use the train channel's categories: a value it does not have is a missing value.
    known = {
        **train.categories,
        **({train.target_name: train_target.categories} if train_target.categories else {}),
    }
    channels: dict[str, Dataset] = {"train": train}
    targets = {"train": train_target}
    for name, layout in others.items():
        if layout is not None:
            channels[name], targets[name] = data.read_channel(layout, columns, known)
            log(f"{name}: {data.describe(channels[name])}")

    task = tasks.decide(task_values, train_target, train.target_name, params["problem_type"], task_hint)
    if facts["more_values"] and task.source == "target" and task.task == "regression":
        task = replace(
            task, reason=f"the target has more than {sharding.TARGET_VALUES_LIMIT - 1:,} distinct values"
        )
    log(task.describe(train.target_name))
    for name, dataset in channels.items():
        what = "training data" if name == "train" else dataset.source
        dataset.y = tasks.encode(dataset.y, targets[name], task, what)
        dataset.task, dataset.classes = task.task, task.classes
    loaded = time.perf_counter()

    if cluster.distributed:
        checkpoint_dir = opt.checkpoint_dir / cluster.current_host  # one folder per host (see README)
        assert cluster.exchange is not None
        watch = cluster.exchange.watch(lambda reason: _fail_now(opt, cluster, reason))
        try:
            model = plugin.fit_distributed(train, channels.get("validation"), params, checkpoint_dir, cluster)
        except Exception as error:
            watch.stop()
            raise _fit_failed(cluster, plugin, error) from error
        watch.stop()
        if not cluster.is_leader:
            cluster.exchange.done()
    else:
        model = plugin.fit(train, channels.get("validation"), params, opt.checkpoint_dir)
    fitted = time.perf_counter()
    description = plugin.describe(model)
    facts_text = ", ".join(f"{k} {v}" for k, v in description.items() if v is not None)
    log(
        f"read {loaded - started:.1f} s, fit {fitted - loaded:.1f} s"
        + (f" ({facts_text})" if facts_text else "")
    )
    if not cluster.is_leader:
        log(f"host {cluster.current_host}: training done; the leader {cluster.leader} writes the model")
        return

    metrics: dict[str, dict[str, float]] = {}
    for channel in METRIC_CHANNELS:
        if channel not in channels:
            continue
        if channels[channel].x.shape[0] == 0:
            log(f"note: no {channel} metrics: this host's share of the {channel} channel is empty")
            continue
        metrics[channel] = plugin.evaluate(model, channels[channel])
        for name, value in metrics[channel].items():
            print(metric_line(channel, name, value), flush=True)
    if cluster.distributed and "train" in metrics:
        log(f"note: the train metrics are on the leader's share of the train channel ({cluster.shard})")
    rows = {channel: int(dataset.x.shape[0]) for channel, dataset in channels.items()}
    rows["train"] = sum(facts["rows"])  # every host's share
    meta = ModelMeta(
        model_module=plugin.name,
        model_name=str(plugin.manifest.get("name", plugin.name)),
        task=task.task,
        task_source=task.source,
        task_reason=task.reason,
        target=train.target_name,
        feature_names=train.feature_names,
        classes=task.classes,
        categories=train.categories,
        model=description,
        rows=rows,
        metrics={channel: {k: _finite(v) for k, v in values.items()} for channel, values in metrics.items()},
        final_metrics_channel=next((c for c in FINAL_CHANNEL_ORDER if c in metrics), None),
        hosts=cluster.world_size,
    )
    save_model_atomically(plugin, model, meta, opt.model_dir)
    meta.write(opt.output_data_dir)
    print(meta.summary_line(), flush=True)
    validation_dir = _channel_dir(opt, "validation", input_config, required=False)
    log(golden.write(opt.output_data_dir, validation_dir, opt.model_dir, plugin, params["target"]))
    log(f"model saved to {opt.model_dir} in {time.perf_counter() - started:.1f} s total")


def _fail_now(opt: OptMl, cluster: clusters.Cluster, reason: str) -> None:
    """The watch saw a host go away while this host's collective still waits: end the process now."""
    if cluster.is_leader:
        write_failure(opt, reason)
    log(f"Training failed: {reason}")
    sys.stdout.flush()
    os._exit(1)


def _fit_failed(cluster: clusters.Cluster, plugin: ModelPlugin, error: Exception) -> BaseException:
    """What a failed distributed fit means. A host's own error (bad data in its share) is its own sentence;
    a broken collective on the leader names the host that went away or failed, from the hosts' reports;
    a broken collective on another host is only logged there (the leader's failure file has the reason)."""
    assert cluster.exchange is not None
    own = isinstance(error, plugin.errors)
    text = first_line(error) or type(error).__name__
    if not cluster.is_leader:
        cluster.exchange.report(str(error) if own else text, own)
        if own:
            error.reported = True  # type: ignore[attr-defined]
            return error
        failure = PeerFailure(
            f"Host {cluster.current_host}: distributed training stopped ({text}); the leader "
            f"{cluster.leader}'s failure file names the host that caused it."
        )
        return failure
    if own:
        return error
    log(f"the collective failed on the leader ({text}); waiting for the other hosts' reports")
    failed, lost = cluster.exchange.reports()
    if failed or lost:
        return PeerFailure(clusters.failure_sentence(failed, lost, text))
    return error


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (AUC with one class present) is null in model-meta.json."""
    return value if math.isfinite(value) else None


def first_line(error: BaseException) -> str:
    """An exception's message without what follows its first line (C++ backtraces, Python details)."""
    text = str(error).strip()
    return text.splitlines()[0][:400] if text else ""


def main() -> int:
    os.umask(0o022)
    opt = OptMl.from_env()
    try:
        run(opt)
    except PeerFailure as error:
        # Another host failed: the leader's failure file names it; the other hosts only log it.
        if getattr(error, "leader", False):
            write_failure(opt, error.reason)
        log(f"Training failed: {error.reason}")
        return 1
    except UserError as error:
        write_failure(opt, str(error))
        log(f"Training failed: {error}")
        return 1
    except MemoryError:
        write_failure(
            opt,
            "Training ran out of memory. Use an instance type with more memory, or less data per channel.",
        )
        log(traceback.format_exc())
        return 1
    except Exception as error:  # anything else: still a readable reason, plus the traceback in the logs
        log(traceback.format_exc())
        if _is_model_error(error):
            write_failure(opt, str(error))
            return 1
        write_failure(
            opt,
            f"Training failed with an unexpected error: {type(error).__name__}: {first_line(error)}. "
            "The job's CloudWatch log has the full traceback.",
        )
        return 1
    return 0


def hard_exit_needed() -> bool:
    """After a multi-host run the process should end without the interpreter's teardown: a model's native
    collective, left unfinalized by a failure, may crash in its destructors (measured: SIGSEGV at exit,
    after the failure file was written), which would replace the exit code."""
    return _distributed


def _is_model_error(error: Exception) -> bool:
    """The model's own ModelError (optional hook) is, like UserError, a sentence for the failure file."""
    try:
        return isinstance(error, load_model_plugin().errors)
    except UserError:
        return False
