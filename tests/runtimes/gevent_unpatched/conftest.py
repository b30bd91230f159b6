"""This group runs in a process that is NOT monkey-patched:
``python -m pytest -q tests/runtimes/gevent_unpatched``. Its scenarios shared with the
patched group live in tests/runtimes/gevent/_gevent_cases.py."""

from __future__ import annotations

import os
import sys

import gevent.monkey
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gevent"))


def pytest_configure(config: pytest.Config) -> None:
    if gevent.monkey.is_module_patched("socket"):
        raise pytest.UsageError(
            "tests/runtimes/gevent_unpatched must run unpatched: "
            "python -m pytest -q tests/runtimes/gevent_unpatched"
        )
