"""Exceptions that cross from a child process to the one that runs it."""

from __future__ import annotations

import pickle


def portable(exc: BaseException, wrap: type[Exception]) -> BaseException:
    """``exc`` itself when it survives pickling, else a ``wrap`` with its type and text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to pickle
        return wrap(f"{type(exc).__name__}: {exc}")
