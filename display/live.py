"""Live feed: a QTimer pulls the newest pipeline message from a zmq subscriber into the window."""

from __future__ import annotations

import time

from PySide6 import QtCore

from deepz.messages import MessageError, Subscriber
from display.state import ViewState
from display.window import ViewerWindow

POLL_MS = 30  # at most ~33 updates a second (above the 30 fps goal, without spending CPU the pipeline needs)
STALE_S = 2.0  # no message for this long: say so in the status bar


class LiveFeed(QtCore.QObject):
    """Connects a window to a pipeline's PUB address; the pipeline never waits on it (lossy, latest-only)."""

    def __init__(self, window: ViewerWindow, address: str, *, poll_ms: int = POLL_MS) -> None:
        super().__init__(window)
        self.window = window
        self.subscriber = Subscriber(address)
        self.shown = 0
        self._last_arrival = time.monotonic()
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.poll)
        self._timer.start(poll_ms)

    def poll(self) -> None:
        """Show the newest waiting message, if any; report bad or missing messages in the status bar."""
        try:
            message = self.subscriber.latest()
        except MessageError as exc:
            self.window.show_message(f"ignored a bad message: {exc}")
            return
        now = time.monotonic()
        if message is None:
            if now - self._last_arrival > STALE_S:
                self.window.show_message(
                    f"no data for {now - self._last_arrival:.0f} s (pipeline stopped or "
                    "not started yet; the viewer reconnects by itself)"
                )
            return
        self._last_arrival = now
        self.window.show_state(ViewState.from_message(message))
        self.shown += 1

    def close(self) -> None:
        """Stop polling and close the socket."""
        self._timer.stop()
        self.subscriber.close()
