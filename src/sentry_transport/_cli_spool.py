"""``sentry-transport spool DIR [--send DSN | --purge [--yes]]``: what waits in a disk spool,
sending it, emptying it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ._factory import make_transport
from .core.request import rfc3339
from .io.spool_survey import purge, survey


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def show(directory: str, out: Any = None) -> int:
    out = out or sys.stdout
    found = survey(directory)
    print(f"spool {found['path']}", file=out)
    print(f"  envelopes waiting: {found['envelopes']} ({_size(found['bytes'])})", file=out)
    if found["oldest_ns"] is not None:
        seconds = found["oldest_ns"] / 1e9
        age = max(0.0, time.time() - seconds)
        print(f"  oldest: {rfc3339(seconds)} ({age:,.0f} s ago)", file=out)
    items = ", ".join(f"{kind} {n}" for kind, n in found["items"].items()) or "none"
    print(f"  items: {items}", file=out)
    print(
        f"  unreadable: {found['unreadable']}, set aside: {found['set_aside']}, "
        f"held by running processes: {found['held_by_running_processes']}",
        file=out,
    )
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width if total <= 0 else min(width, width * done // total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def send(directory: str, dsn: str, timeout: float, err: Any = None) -> int:
    """Deliver what waits (but what running processes hold) with a progress bar."""
    err = err or sys.stderr
    found = survey(directory)
    total = found["envelopes"] - found["held_by_running_processes"]
    transport = make_transport(dsn, spool_dir=directory)
    deadline = time.monotonic() + timeout
    done = 0
    try:
        while time.monotonic() < deadline:
            stats = transport.stats()
            done = stats["delivered"] + sum(sum(v.values()) for v in stats["lost"].values())
            err.write("\r" + _bar(done, total))
            err.flush()
            if done >= total and not stats["queued"] and not stats["in_flight"]:
                break
            time.sleep(0.1)
    finally:
        transport.close(5.0)
    stats = transport.stats()
    err.write("\r" + _bar(stats["delivered"], total) + "\n")
    print(
        f"delivered {stats['delivered']}, lost {stats['events']['lost']} events, "
        f"still waiting {survey(directory)['envelopes']}"
    )
    return 0 if stats["delivered"] >= total else 1


def empty(
    directory: str, yes: bool, ask: Callable[[str], str] | None = None, out: Any = None
) -> int:
    ask, out = ask or input, out or sys.stdout
    found = survey(directory)
    count = found["envelopes"] + found["unreadable"] + found["set_aside"]
    if not yes:
        answer = ask(f"Delete {count} files ({_size(found['bytes'])}) from {found['path']}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=out)
            return 1
    print(f"deleted {purge(directory)} files", file=out)
    return 0
