"""The engine's own cost per small envelope, stage by stage, with no thread, socket or server.

What a worker does for each envelope, run in one thread over ``--count`` envelopes at a time:
measure (encode the JSON, as a capture past the inbox or a worker's drain does), submit,
take a batch (``next_action``, ``MAX_BATCH`` at a time, as a worker does), encode (size limits,
``sent_at``, the head and body), join a pipelined write, read a batch's answers from one buffer
(``quick_response``, the head memo warm), report the results. The total is the floor under
``bench/cpu_per_envelope.py``'s µs CPU per envelope: what threads, sockets and the kernel add
comes on top of it. Medians over ``--repeats`` rounds, fresh envelopes each round.

    .venv/bin/python bench/engine_floor.py [--count 3000] [--repeats 9] [--baseline DIR/src]
        [--plain]

``--plain`` runs the children as if the fast extra were not installed (orjson, isal and
zstandard made unimportable): the standard library's JSON and zlib.

``--baseline`` runs the same stages with an older ``src/`` (``git worktree add``) in a child
process, for an A/B in one run. The numbers are µs of wall time in one thread on an otherwise
idle process (perf_counter): steadier than a multi-threaded run, and what an optimization of
the common path should move.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from cpu_per_envelope import WITHOUT_FAST  # what the fast extra installs (stdlib only)

HERE = Path(__file__).resolve().parent
STAGES = ("measure", "submit", "take", "encode", "write", "read", "report")
ROUNDS_PER_CHILD = 3  # rounds one child process runs (children alternate between peers)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 41\r\n"
    b"Date: Wed, 02 Dec 2026 04:00:00 GMT\r\n\r\n" + b'{"id":"' + b"0" * 32 + b'"}'
)


def rounds(count: int, repeats: int) -> dict[str, list[float]]:
    """µs per envelope of each stage, one entry per round."""
    from events import small_event  # bench/events.py

    from sentry_transport import Envelope
    from sentry_transport.core.dsn import Dsn
    from sentry_transport.core.engine import MAX_BATCH as BATCH  # what a worker takes
    from sentry_transport.core.engine import Engine, Send
    from sentry_transport.core.http11 import HeadMemo, quick_response
    from sentry_transport.runtime.threads import encoded_size

    dsn = Dsn.parse("http://public@127.0.0.1:9/42")
    template = small_event()
    answers = ANSWER * BATCH
    out: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    clock = time.perf_counter
    for _ in range(repeats):
        engine, memo = Engine(dsn), HeadMemo()
        envelopes = [
            Envelope.for_event({**template, "event_id": uuid.uuid4().hex}) for _ in range(count)
        ]
        gc.collect()
        now = time.time()
        marks = [clock()]
        sizes = [encoded_size(envelope) for envelope in envelopes]
        marks.append(clock())
        for envelope, size in zip(envelopes, sizes, strict=True):
            engine.submit(envelope, now, size)
        marks.append(clock())
        batches = []
        while isinstance(action := engine.next_action(now, BATCH), Send):
            batches.append(action.attempts)
        marks.append(clock())
        for batch in batches:
            for attempt in batch:
                engine.encode(attempt, now)
        marks.append(clock())
        for batch in batches:
            b"".join([part for a in batch for part in (a.request.head, a.request.body)])
        marks.append(clock())
        results = []
        for batch in batches:
            rest, answered = answers, []
            for attempt in batch:
                found = quick_response(rest, memo)
                assert found is not None
                response, rest = found
                answered.append((attempt, response))
            results.append(answered)
        marks.append(clock())
        for answered in results:
            engine.on_results(answered, now, 0.5)
        marks.append(clock())
        delivered = engine.stats.events_delivered
        if delivered != count:
            raise SystemExit(f"delivered {delivered} of {count}: the stages are broken")
        for stage, begin, end in zip(STAGES, marks, marks[1:], strict=False):
            out[stage].append((end - begin) / count * 1e6)
        out["total"].append((marks[-1] - marks[0]) / count * 1e6)
    return out


def child_main(count: int, repeats: int, plain: bool = False) -> None:
    if plain:
        from sentry_transport.core import jsonenc

        if jsonenc.accelerator is not None:
            raise SystemExit("orjson was imported although it was blocked")
    print(json.dumps(rounds(count, repeats)))


def run_child(src: str, count: int, repeats: int, plain: bool = False) -> dict[str, list[float]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(HERE)]))
    block = "".join(f"sys.modules[{name!r}] = None; " for name in WITHOUT_FAST) if plain else ""
    code = (
        f"import sys; {block}sys.argv[:] = ['engine_floor']; import engine_floor; "
        f"engine_floor.child_main({count}, {repeats}, {plain})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode:
        raise SystemExit(f"the child with {src} failed:\n{done.stderr}")
    result: dict[str, list[float]] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--baseline", help="an older src/ directory, run side by side")
    parser.add_argument("--plain", action="store_true", help="without the fast extra")
    args = parser.parse_args()
    peers = {"now": str(HERE.parent / "src")}
    if args.baseline:
        peers["baseline"] = args.baseline
    # a fresh process per 3 rounds, peers alternating, so that neither gets a warmer machine
    results: dict[str, dict[str, list[float]]] = {name: {} for name in peers}
    for turn in range(-(-args.repeats // ROUNDS_PER_CHILD)):
        for name, src in sorted(peers.items(), reverse=bool(turn % 2)):  # who goes first alternates
            got = run_child(src, args.count, ROUNDS_PER_CHILD, args.plain)
            for stage, values in got.items():
                results[name].setdefault(stage, []).extend(values)
    names = list(peers)
    codec = "the standard library's JSON" if args.plain else "orjson if installed"
    print(
        f"µs per small envelope (median of {args.repeats} rounds of {args.count}), one thread, "
        f"{codec}"
    )
    print(f"{'stage':8} | " + " | ".join(f"{name:>8}" for name in names))
    for stage in (*STAGES, "total"):
        row = [statistics.median(results[name][stage]) for name in names]
        extra = f" | {row[0] / row[1]:.2f}x" if len(row) == 2 and row[1] else ""
        print(f"{stage:8} | " + " | ".join(f"{value:8.2f}" for value in row) + extra)


if __name__ == "__main__":
    main()
