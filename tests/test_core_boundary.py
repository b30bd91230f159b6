"""The core's boundary: no module of sentry_transport.core imports I/O, a clock, threads or
randomness (time and random numbers are passed in), nor any runtime's library.

Beyond the standard library the core may import only the codecs in ACCELERATORS (pure
computation: encode and compress bytes), and only optionally: inside a function, or in a
``try`` that handles ImportError, so that the core still imports without them.
"""

from __future__ import annotations

import ast
import pathlib
import sys

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
# optional third-party codecs the core may use when installed (the brotli, zstd, fast extras)
ACCELERATORS = {"orjson", "zstandard", "brotli", "isal"}
STDLIB = set(sys.stdlib_module_names) | {"compression"}  # compression.zstd: Python 3.14


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


def third_party_imports(path: pathlib.Path) -> list[tuple[int, str, bool]]:
    """Absolute imports outside the standard library: (line, module, imported optionally)."""
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            optional = True  # imported when called, not when the core is imported
        if isinstance(node, ast.Try):
            guarded = any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, optional or guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        found.extend(
            (node.lineno, name, optional) for name in names if name.split(".")[0] not in STDLIB
        )
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_uses_only_optional_accelerators_beyond_the_stdlib(path: pathlib.Path) -> None:
    bad = [
        f"{path.name}:{line} imports {name}" + ("" if optional else " unguarded")
        for line, name, optional in third_party_imports(path)
        if name.split(".")[0] not in ACCELERATORS or not optional
    ]
    assert not bad, bad


def test_the_core_knows_its_accelerators() -> None:
    """jsonenc takes orjson, compress zstandard, brotli and isal, each optionally."""
    used = {
        (path.name, name)
        for path in MODULES
        for _, name, optional in third_party_imports(path)
        if optional
    }
    assert {
        ("jsonenc.py", "orjson"),
        ("compress.py", "zstandard"),
        ("compress.py", "brotli"),
        ("compress.py", "isal"),
    } <= used


def test_the_accelerator_scan_tells_guarded_from_unguarded(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json\nimport orjson\n"
        "try:\n    import zstandard\nexcept ImportError:\n    zstandard = None\n"
        "try:\n    import brotli\nexcept KeyError:\n    pass\n"
        "def f():\n    import requests\n"
    )
    assert third_party_imports(sample) == [
        (2, "orjson", False),
        (4, "zstandard", True),
        (8, "brotli", False),
        (12, "requests", True),
    ]
