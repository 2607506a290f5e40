"""The pipeline's own tools: `mlpipe-local-run` (one whole pipeline execution on this machine) and
`mlpipe-runs` (the audit trail). Installed into the project venv by `make setup` as console scripts."""
