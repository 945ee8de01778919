"""Loopback ports for the servers and processes the tests and benchmarks start, and for
addresses where nobody may answer.

Each port is bound here and stays bound, never listening, until the run ends: the kernel
gives a bound port to no other bind to port 0 and to no outgoing connection, so nothing can
take it between now and the child's own bind (as it could when the port was closed again
before its number was handed over). The child binds it too and listens, which SO_REUSEADDR
allows (asyncio, gunicorn, http.server and RabbitMQ set it); a connection to a port nobody
listens on is refused.
"""

from __future__ import annotations

import socket

_RESERVED: list[socket.socket] = []


def free_port() -> int:
    """A loopback port reserved for this run (see above)."""
    reserved = socket.socket()
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.bind(("127.0.0.1", 0))
    _RESERVED.append(reserved)
    return reserved.getsockname()[1]
