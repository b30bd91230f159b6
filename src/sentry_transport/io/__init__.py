"""Streams: the I/O the core's HTTP connection asks for, one implementation per kind of socket.

``sockets.SocketStream`` (blocking sockets: threads, and gevent/eventlet through their green
socket modules) and ``aio.AsyncioStream`` (asyncio transports) implement the calls listed in
``core/connection.py``; ``run`` and ``arun`` execute a generator of such calls. ``tls`` builds
the SSL contexts from the options.
"""
