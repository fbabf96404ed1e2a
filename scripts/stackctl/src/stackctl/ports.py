import random
import socket
from collections.abc import Iterable


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:<port> (and we could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def offsets(ports: list[int]) -> list[int]:
    """Every offset a test stack may take: multiples of the ports' span, below 32768."""
    span = max(ports) - min(ports) + 1
    return list(range(span, 32_768 - max(ports), span))


def free_offset(ports: Iterable[int]) -> int:
    """A ``STACK_PORT_OFFSET`` at which every one of ``ports`` is free on 127.0.0.1.

    Test stacks take one just before they start, so they run beside whatever already listens
    on the documented ports (a local PostgreSQL, another stack). The offsets are multiples of
    the ports' span, so two stacks at different offsets never share a port (at 23000 and 20000,
    one's 5001 would be the other's 8001), tried in random order (two test runs starting at
    once rarely pick the same), and keep every port below 32768, where Linux's ephemeral range
    starts, so no client's outgoing port can take one.
    """
    ports = list(ports)
    candidates = offsets(ports)
    # Not the module-level generator: test libraries (hypothesis) seed it, and two runs seeded
    # alike would try the same offsets in the same order.
    random.SystemRandom().shuffle(candidates)
    for offset in candidates:
        if all(port_is_free(port + offset) for port in ports):
            return offset
    raise RuntimeError(f"no offset of {candidates} leaves all of {ports} free")
