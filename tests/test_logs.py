"""Logging goes to the standard error of the moment: a stream swapped in and closed since (a CLI runner's, a
test runner's) is never written to."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from deepz.logs import configure_logging


@pytest.fixture
def root_logging():
    """The root logger's handlers and level as they were, after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_log_line_goes_to_the_current_stderr_after_the_one_it_was_set_up_with_closed(
    monkeypatch, root_logging
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(logging.INFO, origin="test")
    logging.getLogger("deepz.test").info("into the first")
    first.close()  # a CLI runner's stream, closed when its command returned
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("deepz.test").info("into the second")
    said = second.getvalue()
    assert "into the second" in said and "(test)" in said
    assert "Logging error" not in said
