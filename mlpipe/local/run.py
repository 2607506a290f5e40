"""One pipeline execution on this machine: the stages in order, each timed and reported, then a summary.

A stage is a name and a function of the run's state (`RunState`); the stages live in
`mlpipe.local.stages`, one module each, and `STAGES` lists them in pipeline order. A new stage is a new
module and one more line in `STAGES`.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_common.notify import format_duration
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mlpipe.local.console import StageFailed, console
from mlpipe.local.stages import (
    approval,
    build,
    deploy,
    endpoints,
    evaluate,
    record,
    register,
    serve,
    source,
    synth,
    train,
    upload,
)
from mlpipe.local.state import Options, RunState


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunState], None]
    spinner: str | None = None  # shown while the stage runs, for the slow ones


STAGES: tuple[Stage, ...] = (
    Stage("Source", source.run),
    Stage("Synth", synth.run, "cdk synth with cdk-nag…"),
    Stage("Emulator", deploy.run),
    Stage("Data", upload.run),
    Stage("Build", build.run, "building the training image…"),
    Stage("Train", train.run, "training in the local container…"),
    Stage("Record and notify", record.run),
    Stage("Evaluate", evaluate.run),
    Stage("Register", register.run),
    Stage("Approval", approval.run),
    Stage("Smoke-serve", serve.run, "serving the trained model…"),
    Stage("Deploy", endpoints.run, "deploying to the local endpoints…"),
)


@dataclass
class RunReport:
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (stage, outcome, seconds)
    failed: bool = False
    traceback: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str, spinner: str | None = None) -> Iterator[None]:
        started = time.perf_counter()
        status = console.status(spinner) if spinner else contextlib.nullcontext()
        try:
            with status:
                yield
        except StageFailed as error:
            self._done(name, "failed", started)
            console.print(f"[red]✗ {name}[/] {escape(str(error))}")
            self.failed = True
            raise
        except Exception as error:
            # An unexpected error is still a failed stage with a one-line reason; the traceback goes to a file.
            self._done(name, "failed", started)
            console.print(f"[red]✗ {name}[/] {escape(type(error).__name__)}: {escape(str(error))}")
            self.failed = True
            self.traceback = traceback.format_exc()
            raise StageFailed(f"{type(error).__name__}: {error}") from error
        except BaseException:
            self._done(name, "interrupted", started)
            raise
        self._done(name, "ok", started)

    def _done(self, name: str, outcome: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.stages.append((name, outcome, seconds))
        if outcome == "ok":
            console.print(f"[green]✓[/] {name:<18} {seconds:6.1f}s")


def run(options: Options, stages: tuple[Stage, ...] = STAGES) -> int:
    """Run the stages in order; 0 when every stage succeeded, 1 otherwise. Everything the run started is
    stopped on the way out, also on Ctrl-C."""
    report = RunReport()
    work = options.output / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        state = RunState(options=options, work=work, cleanup=cleanup)
        try:
            for stage in stages:
                with report.stage(stage.name, stage.spinner):
                    stage.run(state)
        except StageFailed:
            # The pipeline failed at a stage: still show the record and the emails it produced.
            record.show_after_failure(state)
        finally:
            _summary(report, state.record, state.model_record, work)
    return 1 if report.failed else 0


def _summary(report: RunReport, record: dict[str, Any], model_record: dict[str, Any], work: Path) -> None:
    """The run's own record, and the gate, package and approval of the model it took (`model_record`: the
    same record, or the reused run's on a cache hit)."""
    table = Table(title="local run", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")

    def add_row(name: str, value: str) -> None:
        table.add_row(name, Text(value))  # values are data, never rich markup

    if record:
        (work / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        metrics = record.get("metrics") or {}
        add_row("job", str(record.get("job_name")))
        add_row("status", str(record.get("status")))
        if record.get("failure_reason"):
            add_row("reason", str(record["failure_reason"]))
        add_row("commit", str(record.get("commit_id", ""))[:12])
        add_row("data version", str(record.get("data_version")))
        if record.get("cache_hit_of"):
            add_row("cache", f"hit: reused {record['cache_hit_of']}, no job started")
        elif record.get("cache_key"):
            add_row(
                "cache", f"miss: {record.get('cache_decision', '')} (key {str(record['cache_key'])[:12]})"
            )
        if record.get("kind") == "tuning":
            counts = record.get("trial_counts") or {}
            value = record.get("objective_value")
            add_row(
                "tuning",
                f"{sum(counts.values())} trials; best {record.get('best_training_job') or '-'}"
                + (f" {record.get('objective_metric')}={value:.4g}" if value is not None else ""),
            )
        add_row("metrics", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())) or "-")
        add_row("model artifact", str(record.get("model_artifact") or "-"))
        model = model_record or record
        gate = model.get("gate") or {}
        add_row("gate", f"{gate['status']}: {gate['reason']}" if gate else "-")
        if model.get("model_package_arn"):
            add_row("model package", f"v{model.get('model_package_version')} {model['model_package_arn']}")
            decided = f" by {model['approval_decided_by']}" if model.get("approval_decided_by") else ""
            add_row("approval", f"{model.get('approval_status')}{decided}")
    for stage, outcome, seconds in report.stages:
        add_row(stage, f"{outcome} {format_duration(seconds)}")
    add_row("total", format_duration(sum(s for _, _, s in report.stages)))
    (work / "stages.json").write_text(
        json.dumps(
            [{"stage": s, "outcome": o, "seconds": round(t, 3)} for s, o, t in report.stages], indent=2
        )
    )
    if report.traceback:
        (work / "traceback.txt").write_text(report.traceback)
        add_row("traceback", str(work / "traceback.txt"))
    add_row("files", str(work))
    console.print(table)
    console.print("[red]local run FAILED[/]" if report.failed else "[green]local run succeeded[/]")
