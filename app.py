#!/usr/bin/env python3
"""CDK entry point: `cdk synth` runs this. A bad context value stops synth with one line."""

from __future__ import annotations

import os
import sys

# jsii prints a multi-line banner on Node versions near end of life; it is noise for synth output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from stacks.application import build_app
from stacks.config import ConfigError


def main() -> None:
    try:
        app = build_app()
    except ConfigError as error:
        sys.exit(f"cdk.json context error: {error}")
    app.synth()


if __name__ == "__main__":
    main()
