"""Entry points that own the Qt application: the live viewer and the recording browser."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import shiboken6
from PySide6 import QtWidgets

from wire.curve import ClientKeys
from display.live import LiveFeed
from display.playback import PlaybackBar
from display.process import display_available
from display.recording import RecordingLike, TracksLike, browse
from display.signals import quit_on_signals
from display.window import ViewerWindow

WINDOW_SIZE = (1600, 1000)


def ensure_app() -> QtWidgets.QApplication:
    """The process's QApplication, created offscreen when there is no display to draw on."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        if not display_available():
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QtWidgets.QApplication(sys.argv[:1])
    return app


def open_live_window(address: str, curve: ClientKeys | None = None) -> tuple[ViewerWindow, LiveFeed]:
    """A viewer window subscribed to a pipeline's PUB address (not yet shown), CurveZMQ with ``curve``."""
    ensure_app()
    window = ViewerWindow(f"live {address}", title=f"deepz viewer - live {address}")
    window.resize(*WINDOW_SIZE)
    return window, LiveFeed(window, address, curve=curve)


def open_recording_window(
    reader: RecordingLike | None, t: int | None = None, *, tracks: TracksLike | None = None
) -> tuple[ViewerWindow, PlaybackBar]:
    """A viewer window browsing a recording, showing frame ``t`` (default: its last volume); not yet shown.
    With ``tracks`` (a `deepz track` store) its neurons are shown, over the recording's images if given."""
    ensure_app()
    recording = browse(reader, tracks)
    window = ViewerWindow(recording.describe(), title=f"deepz viewer - {recording.path}")
    window.resize(*WINDOW_SIZE)
    player = PlaybackBar(window, recording)
    player.seek(recording.default_t if t is None else t)
    return window, player


def run_live(address: str, server_key: str | Path | None = None, client_key: str | Path | None = None) -> int:
    """Show the live viewer until its window closes or SIGINT/SIGTERM; the pipeline is unaffected by either.

    With ``server_key`` and ``client_key`` files (wire.curve) it connects to a CurveZMQ publisher. Says on
    stderr what it waits for: a viewer of an address that never answers shows nothing else.
    """
    curve = ClientKeys.load(Path(server_key), Path(client_key)) if server_key and client_key else None
    app = ensure_app()
    window, feed = open_live_window(address, curve)
    window.show()
    print(f"deepz view: waiting for {address} (no message yet); close the window or press Ctrl-C to stop",
          file=sys.stderr, flush=True)  # fmt: skip
    code = _exec(app)
    feed.close()
    dispose(window)
    return code


def run_recording(
    reader: RecordingLike | None, t: int | None = None, *, tracks: TracksLike | None = None
) -> int:
    """Browse a recording and/or a tracks store until the window closes or SIGINT/SIGTERM."""
    app = ensure_app()
    window, _player = open_recording_window(reader, t, tracks=tracks)
    window.show()
    code = _exec(app)
    dispose(window)
    return code


def _exec(app: QtWidgets.QApplication) -> int:
    """Run the event loop; a stop signal ends it cleanly (exit code 0) and is named on stderr."""
    with quit_on_signals(app) as received:
        code = app.exec()
    if received:
        print(f"viewer stopped ({received[0]})", file=sys.stderr, flush=True)
    return code


def dispose(window: QtWidgets.QWidget) -> None:
    """Close and delete a window now, while Python is alive: Qt events during interpreter exit crash PySide6."""
    window.close()
    shiboken6.delete(window)
