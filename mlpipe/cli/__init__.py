"""Command-line tools for the deployed (or locally emulated) pipeline."""
