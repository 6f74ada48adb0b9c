"""Offscreen PNG of the viewer on a recording, exactly as the window shows it (tests, README)."""

from __future__ import annotations

from pathlib import Path

from display.app import WINDOW_SIZE, dispose, ensure_app, open_recording_window
from display.recording import RecordingLike, TracksLike


def render_screenshot(
    reader: RecordingLike | None,
    out: str | Path,
    *,
    t: int | None = None,
    size: tuple[int, int] = WINDOW_SIZE,
    tracks: TracksLike | None = None,
) -> Path:
    """Render the viewer at frame ``t`` (default: the last volume) to the PNG ``out``; returns its path.
    With ``tracks`` (a `deepz track` store) its neurons are shown, over ``reader``'s images if given.
    Raises ValueError when ``size`` is below the window's minimum size, OSError when frame ``t`` cannot be
    read (the PNG would show nothing) or the PNG cannot be written."""
    app = ensure_app()
    window, player = open_recording_window(reader, t, tracks=tracks)
    try:
        window.resize(*size)
        window.show()
        app.processEvents()
        if window.size().toTuple() != tuple(size):
            minimum = window.minimumSizeHint()
            raise ValueError(
                f"a {size[0]}x{size[1]} screenshot is smaller than the viewer's minimum "
                f"{minimum.width()}x{minimum.height()}; ask for at least that size."
            )
        wanted = player.recording.default_t if t is None else t
        if window.state is None or window.state.t != wanted:
            raise OSError(f"no screenshot of frame {wanted}: {window.status_label.text()}")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(out), "PNG"):
            raise OSError(f"could not write the screenshot {out}: check that its folder is writable.")
        return out
    finally:
        dispose(window)
