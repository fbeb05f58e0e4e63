"""Fixtures shared by the test modules."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture()
def root_logging():
    """Put back the root logger's handlers that the CLI's setup_logging replaces."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)
