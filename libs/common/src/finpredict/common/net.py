"""Network helpers shared by the services, the local platform launcher and the test kit."""

from __future__ import annotations

import socket

from finpredict.common.addresses import LOCALHOST


def free_port(host: str = LOCALHOST) -> int:
    """A free TCP port on ``host`` (for programs that cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
