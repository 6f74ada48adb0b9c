"""Logging setup shared by the CLI and the processes it spawns, so both log at the level the user asked for."""

from __future__ import annotations

import logging

NOISY_LOGGERS = ("pymmcore-plus", "zarr", "numcodecs", "asyncio", "fsspec", "PIL", "matplotlib")
_level = logging.INFO


def configured_level() -> int:
    """The level the user asked for (the root logger's own level is not it: pymmcore-plus sets it to DEBUG)."""
    return _level


def configure_logging(level: int, origin: str = "") -> None:
    """Root logging at ``level``, third-party chatter at WARNING unless debugging; ``origin`` tags each line."""
    global _level
    _level = level
    tag = f" ({origin})" if origin else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # pymmcore-plus sets the root logger to DEBUG when it is imported
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)
