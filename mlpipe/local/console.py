"""What the local run prints: one console, a dimmed note line, and the one-line stage failure."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# Piped output (CI, tests) is not wrapped at 80 columns: console links and the email stay copyable.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


class StageFailed(Exception):
    """A stage could not finish; the message says why, in one line."""


def note(message: str) -> None:
    console.print(f"  [dim]{escape(message)}[/]")


def warn(message: str) -> None:
    console.print(f"  [yellow]! {escape(message)}[/]")
