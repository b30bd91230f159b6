"""Realistic-looking event dicts for the benchmarks (deterministic: a seeded generator).

``small_event()`` is about 1 KB of JSON: a message, tags, contexts and a few breadcrumbs.
``large_event(size)`` grows an exception's stack trace (file names, context lines taken
from real standard-library source, local variables) until its JSON is at least ``size``
bytes: repetitive, like real stack traces, so it compresses about as well as they do.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

_SOURCE_FILE = threading.__file__  # real Python source for context lines


def json_size(event: dict[str, Any]) -> int:
    return len(json.dumps(event, separators=(",", ":"), default=str).encode())


def small_event(seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    return {
        "level": "error",
        "platform": "python",
        "timestamp": 1767225600.0 + seed,
        "logger": "shop.billing",
        "server_name": "web-3.eu-west-1",
        "release": "shop@2.14.1+8f3c2a1",
        "environment": "production",
        "message": {
            "formatted": f"Payment failed for order {rng.randrange(10**6)}: card declined",
            "message": "Payment failed for order %s: %s",
            "params": [str(rng.randrange(10**6)), "card declined"],
        },
        "tags": {"region": "eu-west-1", "payment.provider": "stripe", "plan": "pro"},
        "user": {"id": str(rng.randrange(10**7)), "ip_address": "{{auto}}"},
        "contexts": {
            "os": {"name": "Linux", "version": "6.8.0"},
            "runtime": {"name": "CPython", "version": "3.11.7"},
            "trace": {"trace_id": rng.randbytes(16).hex(), "span_id": rng.randbytes(8).hex()},
        },
        "breadcrumbs": {
            "values": [
                {
                    "timestamp": 1767225599.0 + i / 10,
                    "category": "http",
                    "type": "http",
                    "data": {"method": "POST", "url": "https://api.stripe.com/v1/charges"},
                }
                for i in range(3)
            ]
        },
        "extra": {"order_total": "129.90", "currency": "EUR", "attempt": 2},
        "sdk": {"name": "sentry.python", "version": "2.0.0"},
    }


def large_event(size: int, seed: int = 0) -> dict[str, Any]:
    """An error event whose JSON is at least ``size`` bytes, mostly stack frames."""
    rng = random.Random(seed)
    with open(_SOURCE_FILE, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    event = small_event(seed)
    frames: list[dict[str, Any]] = []
    event["exception"] = {
        "values": [
            {
                "type": "CardDeclined",
                "value": "Your card was declined.",
                "module": "shop.billing.errors",
                "mechanism": {"type": "generic", "handled": False},
                "stacktrace": {"frames": frames},
            }
        ]
    }
    while json_size(event) < size:
        lineno = rng.randrange(6, len(lines) - 6)
        module = rng.choice(["shop.billing", "shop.orders", "django.core", "urllib3.pool"])
        frames.append(
            {
                "filename": f"{module.replace('.', '/')}/handlers.py",
                "abs_path": f"/srv/app/.venv/lib/python3.11/{module.replace('.', '/')}.py",
                "module": module,
                "function": rng.choice(["dispatch", "charge", "_request", "get_response"]),
                "lineno": lineno,
                "in_app": module.startswith("shop"),
                "pre_context": lines[lineno - 6 : lineno - 1],
                "context_line": lines[lineno - 1],
                "post_context": lines[lineno : lineno + 5],
                "vars": {
                    "self": f"<{module}.Handler object at 0x7f{rng.randbytes(5).hex()}>",
                    "request": "<WSGIRequest: POST '/api/v2/checkout/'>",
                    "order_id": str(rng.randrange(10**6)),
                    "amount": f"{rng.randrange(10**4) / 100:.2f}",
                    "retries": rng.randrange(4),
                    "headers": {"Content-Type": "application/json", "X-Request-Id": "[Filtered]"},
                },
            }
        )
    return event
