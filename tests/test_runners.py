"""The two runners of the pump's generators (blocking and asyncio) are one algorithm: the
asyncio one is the blocking one with ``await``. This test keeps them from drifting apart."""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap

import pytest

from sentry_transport.io.aio import arun
from sentry_transport.io.sockets import run


def body(function: object) -> str:
    """The function's code without its docstring, ``async`` and ``await`` removed."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    node = tree.body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    statements = node.body[1:] if ast.get_docstring(node) else node.body
    code = "\n".join(ast.unparse(statement) for statement in statements)
    return code.replace("await ", "")


def test_the_asyncio_runner_is_the_blocking_one_with_await() -> None:
    assert body(arun) == body(run)


def steps(log: list[object]) -> object:
    try:
        value = yield (lambda: 1,)
        log.append(value)
        yield (lambda: 1 / 0,)
    except ZeroDivisionError as exc:
        log.append(type(exc).__name__)
    return "done"


def test_run_sends_results_and_throws_errors_in() -> None:
    log: list[object] = []
    assert run(steps(log)) == "done"  # type: ignore[arg-type]
    assert log == [1, "ZeroDivisionError"]


def test_arun_does_the_same_with_awaitables() -> None:
    async def one() -> int:
        return 1

    async def boom() -> None:
        raise ZeroDivisionError

    def async_steps(log: list[object]) -> object:
        try:
            value = yield (one,)
            log.append(value)
            yield (boom,)
        except ZeroDivisionError as exc:
            log.append(type(exc).__name__)
        return "done"

    log: list[object] = []
    assert asyncio.run(arun(async_steps(log))) == "done"  # type: ignore[arg-type]
    assert log == [1, "ZeroDivisionError"]


def test_an_error_the_generator_does_not_handle_comes_out() -> None:
    def failing() -> object:
        yield (lambda: 1 / 0,)

    with pytest.raises(ZeroDivisionError):
        run(failing())  # type: ignore[arg-type]
