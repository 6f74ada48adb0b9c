"""Results files of long evaluations: written at the end, and also when the run fails or is interrupted.

An evaluation that runs for minutes must not lose what it has measured because its last step failed or the
user pressed Ctrl-C (or a process manager sent SIGTERM): the JSON is written either way, flagged
``"complete": false`` with the reason, and the error then propagates as usual.
"""

from __future__ import annotations

import contextlib
import json
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, creating the folder; atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def check_writable(path: Path) -> None:
    """Fail now, not after minutes of measuring, when results cannot be written to ``path``: makes its folder
    and writes a probe file there (an OSError, a user error, when either is refused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
        pass


def _interrupt_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


@contextlib.contextmanager
def results_file(path: Path | None) -> Iterator[dict[str, Any]]:
    """Yield a dict for the results; on leaving, write it to ``path`` (when given, checked writable first)
    with ``"complete"``.

    On an exception or KeyboardInterrupt (SIGTERM is turned into one inside the block) the partial dict is
    written with ``"complete": false`` and ``"stopped_by"``, then the exception continues.
    """
    if path is not None:
        check_writable(path)
    results: dict[str, Any] = {}
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm) if main else None
    try:
        yield results
    except BaseException as exc:
        if path is not None:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}"
            detail = str(exc) or type(exc).__name__
            write_json(path, {**results, "complete": False, "stopped_by": f"{reason}: {detail}"})
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if path is not None:
        write_json(path, {**results, "complete": True})
