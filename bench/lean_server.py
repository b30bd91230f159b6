"""How many pipelined requests/s the lean server (and the full sink) answers, at what CPU cost.

Each server is started as ``python -m sentry_transport.testing --port 0 --quiet [--lean]`` in
a process of its own. This process opens ``--connections`` raw sockets; on each it writes
``--depth`` requests at once, reads their answers, writes the next ``--depth``, for
``--seconds`` after a warm-up, and reads the server's CPU (utime + stime from
``/proc/<pid>/stat``) before and after. Prints requests/s, server µs CPU per request and
this client's own µs CPU per request (if the server is not near a core, the client limits).

    .venv/bin/python bench/lean_server.py [--servers lean,sink] [--seconds 3] [--size 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

from events import large_event, small_event

TICK = os.sysconf("SC_CLK_TCK")
_LENGTH = re.compile(rb"content-length: *([0-9]+)", re.IGNORECASE)


def server_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15


def request(dsn: str, size: int, compress: bool) -> bytes:
    url = urlsplit(dsn)
    event_id = uuid.uuid4().hex
    event = small_event() if size <= 2000 else large_event(size)  # as the other benches send
    payload = json.dumps({**event, "event_id": event_id}).encode()
    body = b"%s\n%s\n%s" % (
        json.dumps({"event_id": event_id}).encode(),
        json.dumps({"type": "event", "length": len(payload)}).encode(),
        payload,
    )
    extra = ""
    if compress:
        body, extra = gzip.compress(body, 3), "Content-Encoding: gzip\r\n"
    head = (
        f"POST /api{url.path}/envelope/ HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
        f"X-Sentry-Auth: Sentry sentry_key={url.username}, sentry_version=7\r\n"
        f"Content-Type: application/x-sentry-envelope\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Client:
    """Raw pipelining sockets: ``depth`` requests in flight on each of ``connections``."""

    def __init__(self, dsn: str, connections: int, depth: int, payload: bytes) -> None:
        url = urlsplit(dsn)
        self.payload, self.depth = payload, depth
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytearray] = {}
        for _ in range(connections):
            sock = socket.create_connection((url.hostname, url.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.selector.register(sock, selectors.EVENT_READ)
            self.buffers[sock] = bytearray()
        self.answered = self.refused = 0

    def run(self, seconds: float) -> int:
        """For ``seconds``: on each socket, write ``depth`` requests at once, read their
        answers, write the next ``depth``. Returns the answers read."""
        start = self.answered
        batch = self.payload * self.depth
        in_flight = dict.fromkeys(self.buffers, self.depth)
        for sock in self.buffers:
            sock.sendall(batch)
        deadline = time.perf_counter() + seconds
        while any(in_flight.values()):
            sending = time.perf_counter() < deadline
            for key, _ in self.selector.select(10):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                in_flight[sock] -= self.read(sock)
                if not in_flight[sock] and sending:
                    sock.sendall(batch)
                    in_flight[sock] = self.depth
        return self.answered - start

    def read(self, sock: socket.socket) -> int:
        data = sock.recv(1 << 20)
        if not data:
            raise RuntimeError("the server closed a connection")
        buf = self.buffers[sock]
        buf += data
        pos = count = 0
        while (end := buf.find(b"\r\n\r\n", pos)) >= 0:
            match = _LENGTH.search(buf, pos, end)
            size = int(match.group(1)) if match else 0
            if len(buf) < end + 4 + size:
                break
            if buf[pos + 9 : pos + 10] != b"2":
                self.refused += 1
            pos, count = end + 4 + size, count + 1
        del buf[:pos]
        self.answered += count
        return count

    def close(self) -> None:
        for sock in self.buffers:
            sock.close()
        self.selector.close()


def measure(server: str, args: argparse.Namespace) -> tuple[float, float, float, int]:
    command = [sys.executable, "-m", "sentry_transport.testing", "--port", "0", "--quiet"]
    command += ["--lean"] if server == "lean" else []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        dsn = proc.stdout.readline().strip()
        payload = request(dsn, args.size, args.gzip)
        client = Client(dsn, args.connections, args.depth, payload)
        try:
            client.run(0.5)  # warm-up
            cpu0, t0, own0 = server_cpu(proc.pid), time.perf_counter(), time.process_time()
            answered = client.run(args.seconds)
            wall, cpu = time.perf_counter() - t0, server_cpu(proc.pid) - cpu0
            own = time.process_time() - own0
        finally:
            client.close()
        if client.refused:
            raise RuntimeError(f"{server}: {client.refused} answers were not 2xx")
        return answered / wall, cpu / answered * 1e6, own / answered * 1e6, len(payload)
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="lean,sink", help="comma list of lean, sink")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured per server")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--depth", type=int, default=16, help="requests in flight per socket")
    parser.add_argument(
        "--size", type=int, default=1000, help="event JSON bytes: <= 2000 the ~1 KB event"
    )
    parser.add_argument("--gzip", action="store_true", help="gzip 3 the body")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.connections} sockets")
    body = " (gzip 3 body)" if args.gzip else ""
    print(f"x {args.depth} pipelined; request B: the whole POST{body}")
    print(f"{'server':<6} {'request B':>9} {'req/s':>9} {'server µs CPU/req':>18} client µs/req")
    for server in args.servers.split(","):
        rate, micros, own, size = measure(server, args)
        print(f"{server:<6} {size:>9,} {rate:>9,.0f} {micros:>18.1f} {own:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
