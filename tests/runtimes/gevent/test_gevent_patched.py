"""gevent+ in a monkey-patched process: the conformance suite, the hub kept free, captures
from foreign OS threads, the end of a program that never closed (_gevent_cases), and a
transport made before ``monkey.patch_all()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from _gevent_cases import *  # noqa: F403 -- the scenarios shared with the unpatched group
from _gevent_cases import SRC

from sentry_transport import Transport
from sentry_transport.testing import Respond, Sink
from sentry_transport.testing.conformance import *  # noqa: F403 -- the scenarios and fixtures
from sentry_transport.transports.with_gevent import GeventTransport

pytestmark = pytest.mark.network


@pytest.fixture
def transport_factory() -> Callable[..., Transport]:
    return lambda dsn, **options: GeventTransport(dsn, **options)


def test_made_before_patching_works_and_keeps_the_hub_free(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.02)
    # Not run_script, which patches first: this script patches itself, late, on purpose (and
    # gevent's MonkeyPatchWarning for patching after ssl was imported is expected here).
    code = textwrap.dedent(
        f"""
        import json, time
        from sentry_transport.transports.with_gevent import GeventTransport
        t = GeventTransport("{sentry_sink.dsn}")  # a preloading server makes it before patching
        runtime = t._pump.runtime
        from gevent import monkey
        monkey.patch_all()
        import gevent
        gaps, own = [], [0.0]  # own: the capture loop's hold on the hub, not counted in a gap
        def tick():
            last, last_own = time.monotonic(), own[0]
            while True:
                gevent.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last - (own[0] - last_own))
                last, last_own = now, own[0]
        ticker = gevent.spawn(tick)
        gevent.sleep(0.02)
        big = {{"message": {{"formatted": "big"}}, "extra": {{"blob": ["x" * 100] * 1000}}}}
        worst = 0.0
        loop_started = time.monotonic()
        for i in range(300):
            started = time.perf_counter()
            t.capture_event(big)
            worst = max(worst, time.perf_counter() - started)
        own[0] += time.monotonic() - loop_started
        flushed = t.flush(40)
        ticker.kill()
        print(json.dumps({{"flushed": flushed, "events": t.stats()["events"], "worst": worst,
                          "gap": max(gaps), "ticks": len(gaps),
                          "rebuilt": t._pump.runtime is not runtime}}))
        t.close(2)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["flushed"] is True and result["rebuilt"] is False, result  # nothing to redo
    assert result["events"] == {"accepted": 300, "delivered": 300, "lost": 0}, result
    assert result["worst"] < 0.02 and result["ticks"] > 20 and result["gap"] < 0.05, result
    assert len(sentry_sink.envelopes) == 300
