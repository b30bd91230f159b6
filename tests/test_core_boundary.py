"""The core's boundary: no module of sentry_transport.core imports I/O, a clock, threads or
randomness (time and random numbers are passed in), nor any runtime's library."""

from __future__ import annotations

import ast
import pathlib

import pytest

import sentry_transport.core

CORE = pathlib.Path(sentry_transport.core.__file__).parent
BANNED = {
    # I/O, processes, signals
    "socket", "ssl", "select", "selectors", "os", "subprocess", "multiprocessing", "signal",
    "shutil", "tempfile", "pathlib", "mmap",
    # clocks, threads, randomness
    "time", "threading", "_thread", "concurrent", "asyncio", "sched", "random", "secrets",
    "uuid",
    # runtimes and HTTP stacks: they belong in drivers
    "gevent", "eventlet", "tornado", "twisted", "requests", "urllib3", "h2", "httpx",
    "aiohttp", "httpcore", "anyio", "trio", "sentry_sdk",
    # the rest of this package (the core depends on nothing outside it)
    "sentry_transport",
}  # fmt: skip


def imported(path: pathlib.Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: must stay inside the core
                if node.level > 1:
                    found.append((node.lineno, "." * node.level + (node.module or "")))
                continue
            found.append((node.lineno, node.module or ""))
    return found


MODULES = sorted(CORE.glob("*.py"))


def test_the_core_has_its_modules() -> None:
    names = {path.stem for path in MODULES}
    assert {"engine", "envelope", "dsn", "ratelimit", "connection", "http11"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_imports_nothing_banned(path: pathlib.Path) -> None:
    bad = [
        f"{path.name}:{line} imports {name}"
        for line, name in imported(path)
        if name.startswith(".") or name.split(".")[0] in BANNED
    ]
    assert not bad, bad


def test_the_scan_catches_a_banned_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json\nfrom time import monotonic\nfrom .. import pump\n"
        "def f():\n    import threading\n"
    )
    names = {name for _, name in imported(sample)}
    assert names == {"json", "time", "..", "threading"}
