"""Launch the live viewer as its own process, so the pipeline never shares an event loop or a crash with it."""

from __future__ import annotations

import subprocess
import sys

_ENTRY = "import sys; from display.app import run_live; sys.exit(run_live(sys.argv[1]))"


def launch_viewer_process(address: str, *, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a viewer subscribed to ``address``; closing it (or it crashing) never affects the run."""
    return subprocess.Popen([sys.executable, "-c", _ENTRY, address], env=env, start_new_session=True)
