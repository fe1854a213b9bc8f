"""The sockets the serve process listens on for the relay when it hands connections to front children."""

from __future__ import annotations

import socket

import pytest

from estafeta.smtp.server import listening_socket


@pytest.mark.parametrize(
    ("host", "reachable"),
    [("127.0.0.1", ["127.0.0.1"]), ("::1", ["::1"]), ("", ["127.0.0.1", "::1"])],
)
def test_a_listener_takes_connections_on_the_addresses_its_host_names(
    host: str, reachable: list[str]
) -> None:
    listener = listening_socket(host, 0)
    try:
        port = listener.getsockname()[1]
        for address in reachable:
            with socket.create_connection((address, port), timeout=5):
                accepted, _ = listener.accept()
                accepted.close()
    finally:
        listener.close()


def test_a_listener_on_one_loopback_address_refuses_the_other() -> None:
    listener = listening_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            socket.create_connection(("::1", listener.getsockname()[1]), timeout=5)
    finally:
        listener.close()
