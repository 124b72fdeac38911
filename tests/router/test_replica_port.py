"""tests/router/replicas.py: a replica whose port was taken before it bound it starts on another one."""

from __future__ import annotations

import socket

from tests.router.replicas import Replica


def test_a_first_start_on_a_taken_port_moves_to_a_free_one(tmp_path):
    replica = Replica(tmp_path / "r")
    taken = replica.port
    with socket.socket() as squatter:  # as an outgoing connection given the port by the kernel would
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            replica.start().wait_healthy()
            assert replica.port != taken and replica.served
            assert "address already in use" in (tmp_path / "r" / f"serve-{taken}.log").read_text()
        finally:
            replica.stop()
