"""Ctrl-C and SIGTERM as a request to stop at the next step boundary.

Raising inside a training step could leave half the parameters updated; instead the handler records the
signal and the loop checks ``requested`` between steps, saves a checkpoint of exactly where the run stands
and exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second Ctrl-C raises
``KeyboardInterrupt`` at once, for a step that hangs; ``train.py`` reports it and exits with 130.
"""
from __future__ import annotations

import signal


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def handle(self, signum, frame) -> None:
        """The signal handler; a loop that installs its own handlers (Lightning) can put this one back."""
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Interrupted(Exception):
    """Raised after a stop request was honoured and the checkpoint written."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
