"""`make local-run`: one whole pipeline execution on this machine, with the project's real code.

Source (git) → Synth (cdk + cdk-nag) → Emulator (moto, resources from the synthesized templates) →
Data (upload, version ids) → Build (the real Dockerfile) → Train (the start-training Lambda handler,
with a local SageMaker that runs the image) → Record and notify (the record-status handler, the SNS
email as sent) → Smoke-serve (the image's `serve` on the trained model) → summary.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lambdas"))  # the Lambda asset root, as /var/task in AWS

from scripts import container_tool  # noqa: E402
from scripts.emulator import MotoServer, read_sns_inbox  # noqa: E402
from scripts.local_pipeline import LocalCodePipeline  # noqa: E402
from scripts.local_sagemaker import LocalSageMaker  # noqa: E402
from scripts.local_stack import LocalDeployment, StackTemplate  # noqa: E402

START_TRAINING = "start_training.handler.lambda_handler"
RECORD_STATUS = "record_status.handler.lambda_handler"
DEFAULT_DATA = ROOT / "data" / "sample"
IMAGE_REPOSITORY = "ml-pipeline-trainer"

# Piped output (CI, tests) is not wrapped at 80 columns: console links and the email stay copyable.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


class StageFailed(Exception):
    """A stage could not finish; the message says why, in one line."""


# -- arguments ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="local-run", description=__doc__.splitlines()[0])
    parser.add_argument("--env", help="environment name (cdk context env_name; default: the one in cdk.json)")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with train/ and optional validation/"
    )
    parser.add_argument(
        "--hyperparameters",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="override the configured hyperparameters, e.g. max_depth=4 num_round=50",
    )
    parser.add_argument("--endpoint-url", help="use this running emulator instead of starting one")
    parser.add_argument(
        "--context", nargs="+", default=[], metavar="KEY=VALUE", help="extra cdk context (-c)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / ".local-run", help="where run files go")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="CodePipeline re-invoke interval")
    args = parser.parse_args(argv)
    args.hyperparameter_overrides = {}
    for item in args.hyperparameters:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--hyperparameters takes NAME=VALUE pairs, got {item!r}")
        args.hyperparameter_overrides[name] = value
    if not (args.data / "train").is_dir():
        parser.error(f"--data {args.data}: expected a folder with a train/ subfolder")
    return args


# -- stage bookkeeping -------------------------------------------------------------------------------------
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


def note(message: str) -> None:
    console.print(f"  [dim]{escape(message)}[/]")


# -- stages ------------------------------------------------------------------------------------------------
@dataclass
class SourceInfo:
    commit: str
    branch: str
    author: str
    message: str
    repo: str
    dirty: bool


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StageFailed(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout.strip()


def read_source() -> SourceInfo:
    commit = git("rev-parse", "HEAD")
    remote = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    repo = remote.removesuffix(".git").split(":")[-1].split("github.com/")[-1] if remote else ROOT.name
    return SourceInfo(
        commit=commit,
        branch=git("rev-parse", "--abbrev-ref", "HEAD"),
        author=git("log", "-1", "--format=%an <%ae>"),
        message=git("log", "-1", "--format=%s"),
        repo=repo,
        dirty=bool(git("status", "--porcelain")),
    )


def synth(out_dir: Path, env: str | None, context: list[str]) -> tuple[StackTemplate, StackTemplate]:
    """`cdk synth` through the pinned CLI, with cdk-nag: a finding fails the run as it fails a deploy."""
    command = ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "-o", str(out_dir)]
    for item in ([f"env_name={env}"] if env else []) + context:
        command += ["-c", item]
    environment = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise StageFailed("cdk synth failed:\n    " + "\n    ".join(lines[-15:]))
    if env is None:
        # The app synthesizes exactly one environment: the one its context names.
        names = sorted(path.name for path in out_dir.glob("TrainingData-*.template.json"))
        if len(names) != 1:
            raise StageFailed(f"expected one TrainingData-<env> stack in {out_dir}, found {names}")
        env = names[0].removeprefix("TrainingData-").removesuffix(".template.json")
    return StackTemplate.load(out_dir, f"TrainingData-{env}"), StackTemplate.load(
        out_dir, f"TrainingPipeline-{env}"
    )


def upload_data(s3: Any, data_dir: Path, bucket: str, prefix: str) -> list[tuple[str, str]]:
    uploaded = []
    for channel in ("train", "validation"):
        channel_dir = data_dir / channel
        if not channel_dir.is_dir():
            continue
        for path in sorted(p for p in channel_dir.rglob("*") if p.is_file()):
            key = f"{prefix}{channel}/{path.relative_to(channel_dir).as_posix()}"
            response = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            uploaded.append((key, response.get("VersionId", "null")))
    if not any(key.startswith(f"{prefix}train/") for key, _ in uploaded):
        raise StageFailed(f"no files under {data_dir / 'train'}")
    return uploaded


@contextlib.contextmanager
def lambda_environment(function_env: dict[str, str], endpoint_url: str, region: str) -> Iterator[None]:
    """The function's configured environment plus what the Lambda runtime would set."""
    saved = dict(os.environ)
    os.environ.update(function_env)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_LAMBDA_FUNCTION_NAME": function_env.get("POWERTOOLS_SERVICE_NAME", "local-function"),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("LOCAL_RUN_LOG_LEVEL", "WARNING"),
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class LambdaContext:
    """The attributes Powertools reads from the Lambda context object."""

    function_name: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def invoke(handler_path: str, event: dict[str, Any]) -> Any:
    module_name, _, function_name = handler_path.rpartition(".")
    handler: Callable[[dict[str, Any], Any], Any] = getattr(
        importlib.import_module(module_name), function_name
    )
    return handler(event, LambdaContext(function_name=module_name.split(".")[0]))


def smoke_serve(image: str, s3: Any, model_uri: str, validation_csv: Path | None, work: Path) -> None:
    bucket, _, key = model_uri.removeprefix("s3://").partition("/")
    model_dir = work / "serve" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        tar.extractall(model_dir, filter="data")
    model_dir.chmod(0o755)
    rows = _feature_rows(validation_csv) if validation_csv else None
    if not rows:
        raise StageFailed("no validation rows to send")
    payload = "\n".join(rows).encode()
    with container_tool.serve(image, model_dir) as base_url:
        request = urllib.request.Request(
            f"{base_url}/invocations",
            data=payload,
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
        )
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as response:
                predictions = response.read().decode()
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    for row, prediction in zip(rows, predictions.split(), strict=False):
        note(f"{row[:60]:<60} → {prediction}")
    note(f"{len(rows)} rows per request, 20 requests: p50 {latencies[10]:.1f} ms, max {latencies[-1]:.1f} ms")


def _feature_rows(validation_csv: Path, count: int = 5) -> list[str]:
    """Validation rows without the target column (the first column, the container's default)."""
    lines = validation_csv.read_text().splitlines()[1 : count + 1]
    return [line.split(",", 1)[1] for line in lines if "," in line]


# -- the run -----------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    report = RunReport()
    work = args.output / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work.mkdir(parents=True, exist_ok=True)
    region = "us-east-1"
    record: dict[str, Any] = {}
    emails: list[dict[str, Any]] = []
    sagemaker: LocalSageMaker | None = None
    with contextlib.ExitStack() as cleanup:
        try:
            with report.stage("Source"):
                source = read_source()
                note(f"{source.commit[:12]} on {source.branch} by {source.author}: {source.message}")
                if source.dirty:
                    console.print("  [yellow]! working tree has uncommitted changes[/]")

            with report.stage("Synth", "cdk synth with cdk-nag…"):
                data_stack, pipeline_stack = synth(work / "cdk.out", args.env, args.context)

            with report.stage("Emulator"):
                endpoint = args.endpoint_url or cleanup.enter_context(MotoServer()).endpoint_url
                session = boto3.session.Session(
                    aws_access_key_id="local", aws_secret_access_key="local", region_name=region
                )
                deployment = LocalDeployment(data_stack, pipeline_stack, region)
                deployment.create(session, endpoint)
                s3 = session.client("s3", endpoint_url=endpoint)
                sqs = session.client("sqs", endpoint_url=endpoint)
                start_env = dict(deployment.function(START_TRAINING).environment)
                record_env = deployment.function(RECORD_STATUS).environment
                email_queue = sqs.create_queue(QueueName="local-run-email-inbox")["QueueUrl"]
                inbox_arn = sqs.get_queue_attributes(QueueUrl=email_queue, AttributeNames=["QueueArn"])
                session.client("sns", endpoint_url=endpoint).subscribe(
                    TopicArn=record_env["TOPIC_ARN"],
                    Protocol="sqs",
                    Endpoint=inbox_arn["Attributes"]["QueueArn"],
                )
                note(f"moto at {endpoint}; {len(deployment.resources)} resources from the templates")

            with report.stage("Data"):
                bucket, prefix = start_env["DATA_BUCKET"], start_env["DATA_PREFIX"]
                uploaded = upload_data(s3, args.data, bucket, prefix)
                note(f"{len(uploaded)} objects to s3://{bucket}/{prefix}")
                for key, version in uploaded:
                    note(f"  {key}  version {version}")

            with report.stage("Build", "building the training image…"):
                tag = f"{IMAGE_REPOSITORY}:{source.commit[:12]}{'-dirty' if source.dirty else ''}"
                image_id = container_tool.build_image(tag)
                note(f"{tag} ({image_id[:19]})")

            training_config = json.loads(start_env["TRAINING_CONFIG"])
            training_config["hyperparameters"] = {
                **training_config.get("hyperparameters", {}),
                **args.hyperparameter_overrides,
            }
            start_env["TRAINING_CONFIG"] = json.dumps(training_config)
            events: list[dict[str, Any]] = []
            sagemaker = LocalSageMaker(
                s3_client=s3,
                workdir=work / "jobs",
                start_container=container_tool.start_training_container,
                stop_container=container_tool.remove_container,
                on_state_change=events.append,
                region=region,
            )
            cleanup.callback(sagemaker.stop_all)
            execution_id = str(uuid.uuid4())
            pipeline = LocalCodePipeline(
                pipeline_name=start_env["PIPELINE_NAME"],
                execution_id=execution_id,
                trigger_detail=f"local-run by {source.author}",
                variables={"TRIGGER": "manual", "DATA_CHANGE": "none"},
            )
            user_parameters = {
                "image_uri": tag,
                "image_digest": image_id if image_id.startswith("sha256:") else f"sha256:{image_id}",
                "commit_id": source.commit,
                "branch": source.branch,
                "repo": source.repo,
                "pipeline_execution_id": execution_id,
                "trigger": "manual",
            }
            audit_table = session.resource("dynamodb", endpoint_url=endpoint).Table(
                start_env["AUDIT_TABLE_NAME"]
            )

            def deliver_events() -> None:
                with lambda_environment(record_env, endpoint, region):
                    while events:
                        invoke(RECORD_STATUS, events.pop(0))

            from pipeline_common import aws as lambda_aws

            with report.stage("Train", "training in the local container…"):
                with lambda_aws.use_clients({"sagemaker": sagemaker, "codepipeline": pipeline}):
                    while True:
                        with lambda_environment(start_env, endpoint, region):
                            invoke(START_TRAINING, pipeline.job_event("start-training", user_parameters))
                        deliver_events()
                        result = pipeline.last_result
                        if result is None:
                            raise StageFailed("the start-training handler returned without a job result")
                        if not result.succeeded or not result.continuation_token:
                            break
                        time.sleep(args.poll_seconds)
                job_name = start_env["JOB_NAME_PREFIX"] + execution_id
                log_file = work / "jobs" / job_name / "train.log"
                if log_file.exists():
                    for line in log_file.read_text(errors="replace").splitlines():
                        if line.startswith("METRIC "):
                            note(line)
                if not result.succeeded:
                    raise StageFailed(f"CodePipeline action failed: {result.failure_message}")
                note(f"job {job_name} completed; outputs {result.output_variables}")

            with report.stage("Record and notify"):
                record = _record(audit_table, job_name)
                emails = read_sns_inbox(sqs, email_queue)
                _show_emails(emails, work)

            validation = (
                sorted((args.data / "validation").glob("*.csv"))
                if (args.data / "validation").is_dir()
                else []
            )
            with report.stage("Smoke-serve", "serving the trained model…"):
                smoke_serve(tag, s3, record["model_artifact"], validation[0] if validation else None, work)
        except StageFailed:
            # The pipeline failed at a stage: still show the record and the emails it produced.
            if sagemaker is not None and "job_name" in locals():
                with contextlib.suppress(Exception):
                    record = record or _record(audit_table, job_name)
                    emails = emails or read_sns_inbox(sqs, email_queue)
                    if emails:
                        _show_emails(emails, work)
        finally:
            _summary(report, record, work)
    return 1 if report.failed else 0


def _record(table: Any, job_name: str) -> dict[str, Any]:
    from scripts.runs import plain

    item = table.get_item(Key={"job_name": job_name}, ConsistentRead=True).get("Item")
    if item is None:
        raise StageFailed(f"no audit record for {job_name}")
    return plain(item)


def _show_emails(emails: list[dict[str, Any]], work: Path) -> None:
    if not emails:
        raise StageFailed("no notification email was published")
    (work / "emails.json").write_text(json.dumps(emails, indent=2))
    last = emails[-1]
    (work / "email.txt").write_text(f"Subject: {last['subject']}\n\n{last['body']}\n")
    for email in emails:
        console.rule(f"[bold]email[/] {email['subject']}")
        console.print(email["body"], markup=False)
    console.rule()
    note(f"{len(emails)} email(s); the last saved to {work / 'email.txt'}")


def _summary(report: RunReport, record: dict[str, Any], work: Path) -> None:
    table = Table(title="local run", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")

    def add_row(field: str, value: str) -> None:
        table.add_row(field, Text(value))  # values are data, never rich markup

    if record:
        (work / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        metrics = record.get("metrics") or {}
        add_row("job", str(record.get("job_name")))
        add_row("status", str(record.get("status")))
        if record.get("failure_reason"):
            add_row("reason", str(record["failure_reason"]))
        add_row("commit", str(record.get("commit_id", ""))[:12])
        add_row("data version", str(record.get("data_version")))
        add_row("metrics", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())) or "-")
        add_row("model artifact", str(record.get("model_artifact") or "-"))
    for stage, outcome, seconds in report.stages:
        add_row(stage, f"{outcome} {seconds:.1f}s")
    add_row("total", f"{sum(s for _, _, s in report.stages):.1f}s")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. from CI or a test) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return run(args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: everything started by this run was stopped[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
