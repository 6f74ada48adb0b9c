"""Entry points that own the Qt application: live viewer, recording browser, offscreen screenshot."""

from __future__ import annotations

import os
import sys

from PySide6 import QtWidgets


def ensure_app() -> QtWidgets.QApplication:
    """The process's QApplication, created offscreen when there is no display to draw on."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QtWidgets.QApplication(sys.argv[:1])
    return app
