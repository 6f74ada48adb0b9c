"""Logging setup shared by the CLI and the processes it spawns, so both log at the level the user asked for."""

from __future__ import annotations

import logging
import sys

NOISY_LOGGERS = ("pymmcore-plus", "zarr", "numcodecs", "asyncio", "fsspec", "PIL", "matplotlib")
_level = logging.INFO


def configured_level() -> int:
    """The level the user asked for (the root logger's own level is not it: pymmcore-plus sets it to DEBUG)."""
    return _level


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a line is logged: a test runner, a GUI or a CLI runner may
    swap it (and close the one it swapped in), which a handler holding the stream it was made with would
    then write to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: int, origin: str = "") -> None:
    """Root logging at ``level``, third-party chatter at WARNING unless debugging; ``origin`` tags each line."""
    global _level
    _level = level
    tag = f" ({origin})" if origin else ""
    line = f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s"
    logging.basicConfig(level=level, format=line, force=True, stream=_CurrentStderr())
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # pymmcore-plus sets the root logger to DEBUG when it is imported
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)
