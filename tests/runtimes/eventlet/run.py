"""Run this group in an eventlet-patched process: patch first, then pytest on this folder.

    .venv/bin/python tests/runtimes/eventlet/run.py [pytest options]

Eventlet warns ``EventletDeprecationWarning`` when imported; this harness silences exactly
that warning for its own import (as the library does for its import).
"""

from __future__ import annotations

import os
import sys
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
    import eventlet

eventlet.monkey_patch()

import pytest  # noqa: E402 -- after patching, on purpose

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(pytest.main(["-q", here, *sys.argv[1:]]))
