"""What AWS does around a handler, for the fault trials: Lambda's asynchronous retries (same event, same
request id, after about 1 and 2 minutes), the dead-letter queue, and a later redrive, on a moved clock.

Trial invariants are checked after the platform has done all it would do, with faults switched off for
the redrive (an operator redrives a DLQ once the fault is gone).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlpipe.local.faults import SandboxCrash

ASYNC_RETRY_DELAYS = (60, 120)  # Lambda's two retries of an asynchronous invocation
REDRIVE_AFTER = 3600  # an operator redrives the DLQ later


@dataclass
class Clock:
    """The trial's clock: a time_machine traveller moved forward by the platform's delays."""

    traveller: Any

    def advance(self, seconds: float) -> None:
        self.traveller.shift(seconds)


@dataclass
class AsyncLambda:
    """One function invoked asynchronously: retries on any error or crash, then the DLQ."""

    invoke: Callable[[Any, str], Any]  # (event, request id) -> result
    clock: Clock
    dead_letters: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def deliver(self, event: Any) -> bool:
        """True if an attempt succeeded; False if the event went to the DLQ."""
        request_id = str(uuid.uuid4())  # Lambda keeps the request id across an invocation's retries
        for attempt, delay in enumerate((0, *ASYNC_RETRY_DELAYS)):
            self.clock.advance(delay)
            try:
                self.invoke(event, request_id)
                return True
            except (Exception, SandboxCrash) as error:
                self.errors.append(f"attempt {attempt + 1}: {type(error).__name__}: {str(error)[:200]}")
        self.dead_letters.append(event)
        return False

    def redrive(self) -> None:
        """Send every dead letter again (a new invocation, after the faults are gone)."""
        self.clock.advance(REDRIVE_AFTER)
        letters, self.dead_letters = self.dead_letters, []
        for event in letters:
            self.deliver(event)
