"""Free loopback ports for a server started on this machine: one for each service, or a run of consecutive ones
(`serve --port P` listens on P, P+1 and P+2). Free *now*: another process may take them before the server binds,
so callers that start a server on them retry on a bind failure."""

from __future__ import annotations

import random
import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct TCP ports free on `host` right now (bound to port 0, read, released together)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_run(n: int = 3, host: str = "127.0.0.1") -> int:
    """A port P with P … P+n-1 all free on `host` right now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free ports found on {host}")
