"""core/estimate.py: the size of JSON not yet encoded, from a bounded sample of it."""

from __future__ import annotations

import json
from collections import OrderedDict, UserDict
from typing import Any

from sentry_transport.core import estimate as estimate_module
from sentry_transport.core.estimate import estimate


def real_size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":"), default=str))


def frame(i: int) -> dict[str, Any]:
    return {
        "filename": f"app/services/module_{i % 7}.py",
        "function": f"handle_step_{i}",
        "lineno": 100 + i,
        "in_app": i % 3 != 0,
        "context_line": "    result = compute(order, customer, retries=3)",
        "pre_context": ["    order = load(order_id)", "    customer = order.customer"],
        "vars": {"order_id": "885440", "retries": 3, "ok": None},
    }


def event(frames: int) -> dict[str, Any]:
    return {
        "event_id": "0" * 32,
        "level": "error",
        "platform": "python",
        "timestamp": 1767225600.0,
        "tags": {"region": "eu-west-1", "plan": "pro"},
        "contexts": {"runtime": {"name": "CPython", "version": "3.11.7"}},
        "breadcrumbs": {"values": [{"message": f"step {i}", "level": "info"} for i in range(20)]},
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": "card declined",
                    "stacktrace": {"frames": [frame(i) for i in range(frames)]},
                }
            ]
        },
    }


def test_an_event_is_estimated_within_2x_of_its_json() -> None:
    for frames in (1, 10, 100, 2000):
        obj = event(frames)
        assert 0.5 <= estimate(obj) / real_size(obj) <= 2, frames


def test_text_and_scalars_alone_are_counted_as_they_are() -> None:
    assert estimate("x" * 1000) == 1002
    assert estimate(b"abc") == 5
    assert estimate(12) == estimate(None) == 8
    assert estimate([]) == estimate({}) == 2


class CountedList(list[Any]):
    """A list that counts how often the estimate asks for its length."""

    looked_at = 0

    def __len__(self) -> int:
        CountedList.looked_at += 1
        return super().__len__()


def test_the_walk_is_bounded_whatever_the_size(monkeypatch: Any) -> None:
    # 8 lists of 8 lists of ... 6 levels deep: 300,000 containers; a budget of 64 values
    monkeypatch.setattr(estimate_module, "_BUDGET", 64)
    CountedList.looked_at = 0

    def tree(depth: int) -> CountedList:
        if depth == 0:
            return CountedList(["leaf"] * 8)
        return CountedList(tree(depth - 1) for _ in range(8))

    obj = tree(6)
    CountedList.looked_at = 0
    assert estimate(obj) > 0
    # each container looked at costs one len(); the walk stops pushing once 64 values are
    # seen, and what it had pushed by then is counted from its length alone
    assert CountedList.looked_at <= 64 + 8


def test_a_wide_mapping_is_sampled_and_scaled() -> None:
    wide = {f"key_{i:05d}": "v" * 20 for i in range(10_000)}
    assert 0.8 <= estimate(wide) / real_size(wide) <= 1.25


def test_types_outside_json_are_taken_for_what_they_behave_as() -> None:
    class Text(str):
        pass

    class Custom:
        pass

    obj: Any = {
        "mapping": UserDict({"a": "b" * 100}),
        "ordered": OrderedDict(x="y" * 100),
        "tuple": ("z" * 100,),
        "text": Text("t" * 100),
        "raw": bytearray(100),
        1: Custom(),
        None: 1.5,
    }
    size = estimate(obj)
    assert 500 <= size <= 1000  # five values of ~100 bytes, all counted
