"""The core: every protocol rule and delivery decision, with no I/O.

Nothing in this package opens a socket or a file, reads a clock, starts a thread, or draws a
random number: time and randomness are arguments, decisions are values. The codec, DSN and
options, data categories, size and rate limits, client reports, retry policy, compression
choice, request building, the HTTP/1.1 codec, proxy heads and the delivery engine live here,
and are tested with bytes and a fake clock. ``tests/test_core_boundary.py`` scans the imports.
"""
