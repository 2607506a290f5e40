"""The media types `serve` answers, written once: the server reads them, and the pipeline's Register stage
declares them on every model package (SupportedContentTypes, SupportedResponseMIMETypes) at synth.

Import-free on purpose: the CDK app reads it without loading the model's libraries.
"""

from __future__ import annotations

CSV = "text/csv"
JSON = "application/json"
PARQUET = "application/x-parquet"

REQUEST_TYPES = (CSV, JSON, PARQUET)  # Content-Type of POST /invocations
RESPONSE_TYPES = (CSV, JSON)  # what Accept may ask for
