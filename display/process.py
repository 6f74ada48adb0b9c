"""Launch the live viewer as its own process: the pipeline never shares an event loop or a crash with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VIEWER_NICENESS = 5  # on a busy machine the pipeline gets the CPU first; the viewer just shows fewer updates
_ENTRY = (
    "import os, sys; os.nice(int(sys.argv[2])); "
    # on Linux the viewer gets SIGTERM when the run's process dies, even by SIGKILL: no orphaned windows
    "sys.platform.startswith('linux') and __import__('ctypes').CDLL(None).prctl(1, 15); "  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[3]) or sys.exit(0); "
    "from display.app import run_live; sys.exit(run_live(sys.argv[1], *sys.argv[4:]))"
)


def display_available() -> bool:
    """True where a window can be shown: macOS, Windows, or a Linux session with X11 or Wayland."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def launch_viewer_process(
    address: str,
    *,
    env: dict[str, str] | None = None,
    niceness: int = VIEWER_NICENESS,
    curve_key: Path | None = None,
) -> subprocess.Popen:
    """Start a viewer subscribed to ``address`` at lower CPU priority; closing it (or it crashing) never
    affects the run. ``curve_key``: the CURVE publisher's own .key_secret file, which serves this local viewer
    as both the server's public key and its client key pair (wire.curve admits the server's own key)."""
    keys = [str(curve_key)] * 2 if curve_key is not None else []
    return subprocess.Popen(
        [sys.executable, "-c", _ENTRY, address, str(niceness), str(os.getpid()), *keys], env=env,
        start_new_session=True,
    )
