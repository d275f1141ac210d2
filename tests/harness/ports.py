"""Free loopback ports for throwaway servers (never a service's default port)."""

from __future__ import annotations

import random
import socket

DEFAULT_PORTS = {5432, 6379, 3000, 8080, 16379}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(low: int = 20000, high: int = 45000, *, also_free: tuple[int, ...] = ()) -> int:
    """A random free 127.0.0.1 port in [low, high]; ``also_free`` offsets must be free too.

    Redis Cluster needs port + 10000 for its bus, so cluster nodes call
    ``free_port(high=45535, also_free=(10000,))`` to stay at or below 55535.
    """
    rng = random.SystemRandom()
    for _attempt in range(500):
        port = rng.randint(low, high)
        if port in DEFAULT_PORTS:
            continue
        if port_is_free(port) and all(port_is_free(port + off) for off in also_free):
            return port
    raise RuntimeError(f"no free port found in {low}-{high}")
