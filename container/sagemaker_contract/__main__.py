"""Entry point: `python -m sagemaker_contract train|serve` (the image's ENTRYPOINT).

SageMaker runs `docker run <image> train` and `docker run <image> serve`, so the first argument picks the mode.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else ""
    if mode == "train":
        from sagemaker_contract import training

        code = training.main()
        if training.hard_exit_needed():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    if mode == "serve":
        from sagemaker_contract.server import main as serve_main

        return serve_main(args[1:])
    print(
        f"usage: <image> train | serve (got {' '.join(args) or 'nothing'}). "
        "SageMaker passes 'train' for training jobs and 'serve' for endpoints.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
