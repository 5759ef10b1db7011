"""Ctrl-C during training: finish the step, checkpoint, stop.

A KeyboardInterrupt raised wherever the signal lands could leave Adam half-way through an update,
so the first SIGINT only raises a flag that the training loop reads after each step; it then
writes a checkpoint and returns. A second SIGINT interrupts at once (KeyboardInterrupt), for a
step that takes too long; one within a second of the first is taken for the same Ctrl-C (torchrun
forwards the SIGINT its workers got from the terminal already). Signal handlers can only be set in the main thread: elsewhere Ctrl-C
keeps Python's default behaviour.
"""

from __future__ import annotations

import signal
import threading
import time

REPEAT_SECONDS = 1.0  # a second SIGINT sooner than this after the first is the same Ctrl-C


class StopOnInterrupt:
    """Context manager; `requested` turns True at the first Ctrl-C inside it."""

    def __init__(self) -> None:
        self.requested = False
        self._first = 0.0
        self._installed = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first = True, now
        elif now - self._first > REPEAT_SECONDS:
            raise KeyboardInterrupt

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)  # None: set outside Python; restore the default then
            self._previous = signal.default_int_handler if previous is None else previous
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
