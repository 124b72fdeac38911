"""An upstream that accepts the connection and never answers (a real TCP server that holds its sockets)
must not hold up the listings: /api/tags, /v1/models and /api/ps answer within LISTING_WAIT_S with the
local models (and the upstream's last listing, when it had one), and the log names the upstream skipped.
Through the official ollama and openai clients."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ollama
import openai

from tests.api.conftest import ThreadedServer, free_port
from tests.api.stub_engine import StubEngine
from velollm.proxy.gateway import LISTING_WAIT_S

PROMPT_S = LISTING_WAIT_S + 1.5  # the deadline, and room for a loaded CI machine (it took 5 s before)


class HungServer:
    """Accepts every connection and never reads nor writes a byte (until closed)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def _app(models: tuple[str, ...], upstream_url: str | None = None):
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.proxy.gateway import UpstreamGateway
    from velollm.proxy.upstream import UpstreamConfig

    gateway = UpstreamGateway(UpstreamConfig(url=upstream_url)) if upstream_url else None
    return create_app(ServerConfig(models=models, stats_interval_s=0), {m: StubEngine() for m in models},
                      upstream=gateway)


@contextmanager
def _served(app) -> Iterator[str]:
    port = free_port()
    with ThreadedServer(app, port):
        yield f"http://127.0.0.1:{port}"


def _timed(call):
    t0 = time.perf_counter()
    out = call()
    return out, time.perf_counter() - t0


def test_a_hung_upstream_is_skipped_and_named_in_the_log(caplog):
    hung = HungServer()
    try:
        with caplog.at_level(logging.WARNING), _served(_app(("demo",), f"http://127.0.0.1:{hung.port}")) as url:
            olm = ollama.Client(host=url, timeout=30)
            oai = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)
            for _ in range(2):  # the second time too: the first fetch still hangs in the background
                tags, took = _timed(olm.list)
                assert [m.model for m in tags.models] == ["demo"] and took < PROMPT_S, took
                ps, took = _timed(olm.ps)
                assert [m.model for m in ps.models] == ["demo"] and took < PROMPT_S, took
                models, took = _timed(oai.models.list)
                assert [m.id for m in models.data] == ["demo"] and took < PROMPT_S, took
            assert hung.accepted  # it was asked, and said nothing
    finally:
        hung.close()
    said = caplog.text
    assert f"upstream http://127.0.0.1:{hung.port} did not list its models within {LISTING_WAIT_S:g} s" in said
    assert "no earlier listing of it to show" in said
    # once per fetch that hangs (each lasts the 5 s kind probe), not once per listing (4 of tags and models)
    assert 1 <= said.count("did not list its models") <= 2
    assert f"upstream http://127.0.0.1:{hung.port}: GET /api/ps did not answer within" in said


def test_an_upstream_that_hangs_later_is_listed_from_its_last_listing(caplog):
    """A second VeloLLM as the Ollama upstream answers a listing, then its port is taken by a server that
    hangs: the tags show what it listed last, at once."""
    up_port = free_port()
    with _served(_app(("demo",), f"http://127.0.0.1:{up_port}")) as url:
        olm = ollama.Client(host=url, timeout=30)
        with ThreadedServer(_app(("upstairs",)), up_port):
            assert [m.model for m in olm.list().models] == ["demo", "upstairs"]
            assert [m.model for m in olm.ps().models] == ["demo", "upstairs"]  # what runs there too
        hung = HungServer(up_port)
        try:
            with caplog.at_level(logging.WARNING):
                tags, took = _timed(olm.list)
                assert [m.model for m in tags.models] == ["demo", "upstairs"] and took < PROMPT_S, took
                ps, took = _timed(olm.ps)
                assert [m.model for m in ps.models] == ["demo"] and took < PROMPT_S, took  # not what ran before
            assert "its last listing, 1 models" in caplog.text
        finally:
            hung.close()


def test_a_hung_backend_of_the_router_is_skipped_and_the_others_listed(tmp_path, caplog):
    """`--config` with an Ollama stand-in that answers and a backend that hangs (admitted until its first
    health probe fails, 1 s in): the listings hold the one that answered, at once."""
    from tests.ollama_upstream import ollama_app
    from tests.router.replicas import config_toml, router_app

    hung = HungServer()
    try:
        with _served(ollama_app(["answering:latest"])) as good_url:
            toml = config_toml([{"name": "good", "url": good_url, "kind": "ollama"},
                                {"name": "stuck", "url": f"http://127.0.0.1:{hung.port}", "kind": "ollama"}],
                               health_interval_s=3600)
            with caplog.at_level(logging.WARNING), _served(router_app(toml, tmp_path)) as url:
                olm = ollama.Client(host=url, timeout=30)
                tags, took = _timed(olm.list)
                assert [m.model for m in tags.models] == ["answering:latest"] and took < PROMPT_S, took
                ps, took = _timed(olm.ps)
                assert [m.model for m in ps.models] == ["answering:latest"] and took < PROMPT_S, took
                models, took = _timed(openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).models.list)
                assert [m.id for m in models.data] == ["answering:latest"] and took < PROMPT_S, took
    finally:
        hung.close()
    assert f"upstream http://127.0.0.1:{hung.port} did not list its models within" in caplog.text
