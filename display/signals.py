"""SIGINT (Ctrl-C) and SIGTERM close a viewer cleanly instead of being ignored or killing it mid-draw.

While Qt's event loop waits in C++, Python runs no signal handler; a short timer wakes the interpreter so a
Ctrl-C is handled within a fraction of a second even when no data arrives.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from PySide6 import QtCore, QtWidgets

WAKE_MS = 200
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def quit_on_signals(app: QtWidgets.QApplication) -> Iterator[list[str]]:
    """Within the block (main thread), SIGINT/SIGTERM quit ``app``'s event loop; yields the names received."""
    received: list[str] = []

    def handle(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        app.quit()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(WAKE_MS)
    try:
        yield received
    finally:
        wake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
