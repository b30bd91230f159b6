"""Runtimes: what the pump needs from a way of running code (threads, an event loop, ...).

A runtime is a small class; the pump (workers.py, pump.py) does everything else. The calls
the pump's generators yield (``(callable, *args)``) are run by the runtime's runner: plainly
for blocking runtimes (``io.sockets.run``), awaited for event loops (``io.aio.arun``).

    name, inline            inline: no workers of its own (the sync transport)
    cooperative             its workers share a thread with the application (a loop, a hub):
                            work in steps (a flush's drains) yields between them
    attach(pump)            the pump it serves (an event loop's runtime watches its loop end)
    lock()                  a lock for decisions: never held across I/O or a wait
    wake()                  an event for one waiter: set() from any thread, clear(),
                            wait(timeout) -> bool (True when set), blocking or awaitable
    spawn(work, name)       start a worker running the generator ``work()``; False if it
                            cannot now (no loop yet); RuntimeError if threads cannot start
    stream()                a new stream for one connection (see core/connection.py)
    tls(options), proxy_tls()   SSL contexts whose sockets suit this runtime
    encode(fn, attempts, now)   run ``fn(attempt, now)`` for each, off the loop if large
    measure(envelope)       bytes one envelope holds (called on the capturing thread)
    measure_all(envelopes)  the same for a drained batch (on a worker), or for its first
                            envelopes only (the rest goes back to the inbox)
    sleep(seconds)          a pause (inline runtimes, the spool; on a cooperative runtime, a
                            flush's turn for the loop between its drains)
    patched()               True when the process changed under it (monkey-patched after
                            it was made; its loop closed): the pump rebuilds
    after_fork()            drop what a forked child cannot use
    at_exit(pump)           drain at interpreter exit within the shutdown timeout
    run                     (blocking runtimes) how a caller's thread runs a generator
    connection(pump)        (optional) a connection of its own instead of core's
                            HttpConnection, e.g. over requests or urllib3: an object with
                            ``exchange(request, deadline)`` (a generator), ``abort()``,
                            ``open``, ``since`` and a ``stream`` (close_now/abort/forget)

``threads.Threads`` (and ``threads.Inline``) and ``aio.Asyncio`` are the first two.
"""
