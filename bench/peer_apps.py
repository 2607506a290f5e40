"""Our inference app for peer servers in bench/serve.py: the same ASGI bridge the image runs under granian.

uvicorn --factory peer_apps:uvicorn_app --http httptools ...   (PYTHONPATH=container:bench)
"""

from __future__ import annotations

import os

from sagemaker_contract.server import Bridge
from sagemaker_contract.serving import MAX_PAYLOAD_BYTES, create_app


def uvicorn_app() -> Bridge:
    return Bridge(create_app(), int(os.environ.get("BENCH_PORT", "8080")), 60.0, MAX_PAYLOAD_BYTES)
