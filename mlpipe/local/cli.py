"""`mlpipe-local-run`: one whole pipeline execution on this machine, with the project's real code.

Source (git) → Synth (cdk + cdk-nag) → Emulator (moto, resources from the synthesized templates) →
Data (upload, version ids) → Build (the real Dockerfile) → Train (the start-training Lambda handler,
with a local SageMaker that runs the image) → Record and notify (the record-status handler, the SNS
email as sent) → Evaluate (the quality gate) → Register (the model package) → Approval (--approve, or
--approval-wait, or awaiting approval; then the lineage) → Smoke-serve (the image's `serve` on the
trained model) → Deploy (--deploy: staging, its golden test through the local API, production behind the
guardrail; --batch-transform: then the transform job) → summary.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from mlpipe.local.console import console
from mlpipe.local.run import run
from mlpipe.local.state import Options
from mlpipe.local.tuning import EXAMPLE_TUNING
from mlpipe.project import ROOT, SAMPLE_DATA

# --batch-transform's config (cdk.json's `batch_transform` key, as a user would set it).
LOCAL_BATCH_TRANSFORM = {
    "input_prefix": "batch/input/",
    "output_prefix": "batch/output/",
    "instance_type": "ml.m5.large",
}


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="mlpipe-local-run", description=__doc__.splitlines()[0])
    parser.add_argument("--env", help="environment name (cdk context env_name; default: the one in cdk.json)")
    parser.add_argument(
        "--data", type=Path, default=SAMPLE_DATA, help="folder with train/ and optional validation/ and test/"
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a model folder inside this checkout to build the image with (cdk context model_dir; default: "
        "the configured one, container/user_model), e.g. examples/linear_model",
    )
    parser.add_argument(
        "--hyperparameters",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="override the configured hyperparameters, e.g. max_depth=4 num_round=50",
    )
    parser.add_argument(
        "--endpoint-url", help="use this running emulator (mlpipe-emulator) instead of starting one"
    )
    parser.add_argument(
        "--context", nargs="+", default=[], metavar="KEY=VALUE", help="extra cdk context (-c)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / ".local-run", help="where run files go")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="CodePipeline re-invoke interval")
    parser.add_argument(
        "--tune",
        type=int,
        metavar="N",
        help="run a hyperparameter tuning job of N trials instead of one training job: the `tuning` of "
        "cdk.json / cdk.local.json if set, else an example search space (max_depth, eta); trials run one "
        "after another with the real image, hyperparameters drawn at random",
    )
    parser.add_argument(
        "--instance-count",
        type=int,
        metavar="N",
        help="train on N hosts (training_instance_count): N containers algo-1..algo-N on a private container "
        "network, one XGBoost model across them",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="start the execution with RETRAIN=true: train even if a run with identical inputs completed "
        "(against a reused emulator, an unchanged second run is otherwise a cache hit)",
    )
    parser.add_argument(
        "--faults",
        type=int,
        metavar="SEED",
        help="inject seeded transient faults (throttling, 5xx, dropped connections, calls applied while the "
        "caller sees an error) into the handlers' AWS calls; the run must still complete",
    )
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument(
        "--approve",
        action="store_true",
        help="approve the registered model package as a named local IAM user (recorded as the approver)",
    )
    decide.add_argument(
        "--approval-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for an approval made from another terminal through the run's gateway "
        "(the run prints the command)",
    )
    parser.add_argument(
        "--deploy",
        action="store_true",
        help="after approval: deploy the package to a local staging endpoint (the real image's serve behind a "
        "local API like API Gateway's), run its golden test through that API, then deploy it to production "
        "behind the guardrail (needs --approve)",
    )
    parser.add_argument(
        "--batch-transform",
        action="store_true",
        help="with --deploy: configure batch_transform (input under batch/input/, output under batch/output/), "
        "put the validation rows under the input prefix, and run the transform job deploy-model starts after "
        "the production deploy (the real image's serve, the input split into requests)",
    )
    args = parser.parse_args(argv)
    if args.deploy and not args.approve:
        parser.error("--deploy deploys the approved package: use it with --approve")
    if args.batch_transform and not args.deploy:
        parser.error("--batch-transform runs after the production deploy: use it with --deploy")
    if args.approval_wait < 0:
        parser.error("--approval-wait takes a number of seconds >= 0")
    overrides = {}
    for item in args.hyperparameters:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--hyperparameters takes NAME=VALUE pairs, got {item!r}")
        overrides[name] = value
    if not (args.data / "train").is_dir():
        parser.error(f"--data {args.data}: expected a folder with a train/ subfolder")
    context = list(args.context)
    if args.model is not None:
        if any(item.partition("=")[0] == "model_dir" for item in context):
            parser.error("--model and --context model_dir=... both set the model folder: use one")
        context.append(f"model_dir={model_dir_argument(parser, args.model)}")
    if args.instance_count is not None:
        if not 1 <= args.instance_count <= 100:
            parser.error("--instance-count takes a number of hosts from 1 to 100")
        if any(item.partition("=")[0] == "training_instance_count" for item in context):
            parser.error("--instance-count and --context training_instance_count=... both set it: use one")
        context.append(f"training_instance_count={args.instance_count}")
    if args.batch_transform:
        if any(item.partition("=")[0] == "batch_transform" for item in context):
            parser.error("--batch-transform and --context batch_transform=... both set it: use one")
        context.append(f"batch_transform={json.dumps(LOCAL_BATCH_TRANSFORM)}")
    if args.tune is not None:
        if args.tune < 1:
            parser.error("--tune takes a number of trials, at least 1")
        if any(item.partition("=")[0] == "tuning" for item in context):
            parser.error("--tune and --context tuning=... both set the tuning: use one")
        context.append(f"tuning={json.dumps(tuning_with_trials(args.tune))}")
    return Options(
        data=args.data,
        output=args.output,
        env=args.env,
        hyperparameter_overrides=overrides,
        endpoint_url=args.endpoint_url,
        context=tuple(context),
        poll_seconds=args.poll_seconds,
        faults_seed=args.faults,
        approve=args.approve,
        approval_wait=args.approval_wait,
        retrain=args.retrain,
        deploy=args.deploy,
    )


def model_dir_argument(parser: argparse.ArgumentParser, folder: Path) -> str:
    """`--model` as the `model_dir` context value: relative to the checkout, which CodeBuild builds from."""
    try:
        return folder.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        parser.error(
            f"--model {folder}: expected a folder inside this checkout ({ROOT}), as CodeBuild builds it"
        )


def tuning_with_trials(trials: int) -> dict[str, Any]:
    """The configured `tuning` (cdk.local.json over cdk.json) with `trials` trials, or the example one."""
    from stacks.config import read_json_context

    configured: Any = None
    for name in ("cdk.json", "cdk.local.json"):
        value = read_json_context(ROOT / name).get("tuning")
        if value not in (None, "", "none", "off"):
            configured = json.loads(value) if isinstance(value, str) else value
    tuning = dict(configured if isinstance(configured, dict) else EXAMPLE_TUNING)
    tuning["max_jobs"] = trials
    tuning["max_parallel_jobs"] = min(int(tuning.get("max_parallel_jobs", 1)), trials)
    return tuning


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # SIGTERM (e.g. from CI or a test) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(options)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: everything started by this run was stopped[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
