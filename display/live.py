"""Live feed: a QTimer pulls the newest pipeline message from a zmq subscriber into the window."""

from __future__ import annotations

import logging
import time

from PySide6 import QtCore

from wire.curve import ClientKeys
from wire.messages import MessageError, Subscriber
from display.state import ViewState
from display.window import ViewerWindow

log = logging.getLogger(__name__)

POLL_MS = 30  # at most ~33 updates a second (above the 30 fps goal, without spending CPU the pipeline needs)
STALE_S = 2.0  # no message for this long: say so in the status bar


class LiveFeed(QtCore.QObject):
    """Connects a window to a pipeline's PUB address; the pipeline never waits on it (lossy, latest-only).

    Whatever arrives, nothing raises out of the poll (a Qt slot): a malformed message is rejected, counted in
    ``rejected`` and the window's status line, and the next good one is shown.
    """

    def __init__(
        self, window: ViewerWindow, address: str, *, poll_ms: int = POLL_MS, curve: ClientKeys | None = None
    ) -> None:
        super().__init__(window)
        self.window = window
        self.address = address
        self.subscriber = Subscriber(address, curve=curve)
        self.shown = 0
        self.rejected = 0
        self._started = self._last_arrival = time.monotonic()
        self.window.show_message(f"waiting for {address} (no message yet)")
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.poll)
        self._timer.start(poll_ms)

    def poll(self) -> None:
        """Show the newest waiting message, if any; report bad or missing messages in the status bar."""
        try:
            message = self.subscriber.latest()
        except MessageError as exc:
            self._reject(str(exc))
            return
        now = time.monotonic()
        if message is None:
            if not self.shown:
                self.window.show_message(
                    f"waiting for {self.address} (no message yet, {now - self._started:.0f} s)"
                )
            elif now - self._last_arrival > STALE_S:
                self.window.show_message(
                    f"no data for {now - self._last_arrival:.0f} s (pipeline stopped or "
                    "not started yet; the viewer reconnects by itself)"
                )
            return
        self._last_arrival = now
        try:
            self.window.show_state(ViewState.from_message(message))
        except Exception as exc:  # noqa: BLE001 - a Qt slot must not raise: what the checks missed is rejected
            log.debug("could not draw message %d", message.seq, exc_info=True)
            self._reject(f"could not draw it ({type(exc).__name__}: {exc})")
            return
        self.shown += 1

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.window.rejected_messages = self.rejected
        self.window.show_message(f"rejected {self.rejected} bad message(s); last: {reason}")

    def close(self) -> None:
        """Stop polling and close the socket."""
        self._timer.stop()
        self.subscriber.close()
