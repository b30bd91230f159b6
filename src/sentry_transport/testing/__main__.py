"""Run the foreground sink: ``python -m sentry_transport.testing [--port P] [--quiet]``.

How it works: it only hands the command line to ``_cli.main`` and exits with its status.
"""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
