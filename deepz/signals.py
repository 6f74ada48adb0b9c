"""SIGINT and SIGTERM end a run cleanly: the first stops it after the frame in hand, a second aborts at once.

A process manager or `docker stop` sends SIGTERM; it must leave the same consistent, closed recording and
summary as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM calls ``stop(signal name)``; the next raises KeyboardInterrupt.

    Only the main thread can install handlers; elsewhere the block runs with the handlers it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[str] = []

    def handle(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if received:
            raise KeyboardInterrupt(f"second stop signal ({name})")
        received.append(name)
        log.warning("%s received: stopping after the frame in hand (send it again to abort at once)", name)
        stop(name)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
