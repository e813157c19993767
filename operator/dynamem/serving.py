"""Where a process serves HTTP (the operator's and the KubeVirt stand-in's /metrics), checked before it
starts anything: a name that does not resolve or a port out of range would otherwise fail only at the bind,
after the process had begun its work, with a traceback that names no flag."""

from __future__ import annotations

import socket

__all__ = ["address_problem"]


def address_problem(address: str, port: int) -> str | None:
    """Why ``address``:``port`` cannot be served on, or None."""
    if not 0 <= port <= 65535:
        return "the port must be 0 to 65535"
    try:
        socket.getaddrinfo(address, port)
    except (OSError, UnicodeError) as exc:
        return f"not an address to serve on ({exc})"
    return None
