"""`mlpipe-local-run`: one whole pipeline execution on this machine, with the project's real code.

Source (git) → Synth (cdk + cdk-nag) → Emulator (moto, resources from the synthesized templates) →
Data (upload, version ids) → Build (the real Dockerfile) → Train (the start-training Lambda handler,
with a local SageMaker that runs the image) → Record and notify (the record-status handler, the SNS
email as sent) → Evaluate (the quality gate) → Register (the model package) → Approval (--approve, or
--approval-wait, or awaiting approval; then the lineage) → Smoke-serve (the image's `serve` on the
trained model) → summary.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mlpipe.local.console import console
from mlpipe.local.run import run
from mlpipe.local.state import Options
from mlpipe.project import ROOT, SAMPLE_DATA


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="mlpipe-local-run", description=__doc__.splitlines()[0])
    parser.add_argument("--env", help="environment name (cdk context env_name; default: the one in cdk.json)")
    parser.add_argument(
        "--data", type=Path, default=SAMPLE_DATA, help="folder with train/ and optional validation/"
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
    args = parser.parse_args(argv)
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
    return Options(
        data=args.data,
        output=args.output,
        env=args.env,
        hyperparameter_overrides=overrides,
        endpoint_url=args.endpoint_url,
        context=tuple(args.context),
        poll_seconds=args.poll_seconds,
        faults_seed=args.faults,
        approve=args.approve,
        approval_wait=args.approval_wait,
    )


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
