"""Suite-wide hooks."""

from __future__ import annotations

import os
import sys

import pytest

_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process once pytest has reported, when Qt was used.

    Widgets that pytest-qt leaves to the garbage collector receive Qt events during interpreter
    finalisation, which crashes PySide6 6.11 after every test has passed (the viewer's own entry points
    delete their windows explicitly: display.app.dispose). Skipping finalisation keeps pytest's exit status.
    """
    if "PySide6.QtWidgets" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
