"""The CLI's side of a running `velollm serve`: its address ($VELOLLM_HOST) and small typed reads."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from velollm.wire.ollama_host import parse_host

DEFAULT_PORT = 8000
DEFAULT_HOST = f"http://127.0.0.1:{DEFAULT_PORT}"


class ServerError(Exception):
    """The server did not answer, or answered with an error (its message, as the server wrote it)."""


def server_url(env: Mapping[str, str]) -> str:
    """$VELOLLM_HOST as a base URL, read as Ollama reads $OLLAMA_HOST (envconfig.Host) with our port 8000 for its
    11434: `host[:port]`, `http://host` (port 80), `https://host` (443), a path after the host kept as the base
    path, a bad port: 8000."""
    return parse_host(env.get("VELOLLM_HOST"), DEFAULT_PORT)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class ServerClient:
    """httpx against one server; every error becomes a ServerError with the server's own message."""

    def __init__(self, base_url: str, timeout: float = 600.0, api_key: str | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answers(self) -> bool:
        """True when something answers /api/version at the address."""
        import httpx

        try:
            return self.http.get("/api/version", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        return self._json(self._send("GET", path))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(self._send("POST", path, json=body))

    def call(self, method: str, path: str, body: dict[str, Any]) -> None:
        """A request whose success has no body to read (Ollama's /api/delete, /api/copy: 200, empty)."""
        self._send(method, path, json=body)

    def head(self, path: str) -> int:
        """The status code of a HEAD request (Ollama's blob check: 200 there, 404 not)."""
        import httpx

        try:
            return self.http.head(path).status_code
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def upload(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        """POST a body sent as it is read (a GGUF is gigabytes: never held whole)."""
        self._send("POST", path, content=chunks, headers={"Content-Length": str(size)})

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and yield each NDJSON line of the answer as it arrives (Ollama's streaming format)."""
        import httpx

        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(_message(response))
                for line in response.iter_lines():
                    if line.strip():
                        chunk = json.loads(line)
                        if isinstance(chunk, dict) and chunk.get("error"):
                            raise ServerError(str(chunk["error"]))
                        yield chunk
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def metrics(self) -> list[Sample]:
        """/metrics parsed with prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self._send("GET", "/metrics").text
        return [Sample(s.name, dict(s.labels), s.value)
                for family in text_string_to_metric_families(text) for s in family.samples]

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise ServerError(_message(response))
        return response

    def _unreachable(self, exc: Exception) -> ServerError:
        return ServerError(f"no VeloLLM server answers at {self.base_url} ({exc}); start one with "
                           "`velollm serve` or set $VELOLLM_HOST")

    @staticmethod
    def _json(response: Any) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{response.request.url}: not JSON: {response.text[:200]!r}") from exc


def _message(response: Any) -> str:
    """The error text of an Ollama (`{"error": "..."}`) or OpenAI (`{"error": {"message"}}`) body, as Ollama's
    client gives it (api.StatusError: the message alone, `model 'x' not found`); the status only when the body
    says nothing."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error or response.text.strip() or f"HTTP {response.status_code} {response.reason_phrase}".strip())


def quiet_http_log() -> None:
    """No httpx INFO line per request on a command's stderr: one line per request is the server's to log."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)


def server_command(body: Callable[[argparse.Namespace, ServerClient], int]) -> Callable[[argparse.Namespace], int]:
    """A subcommand's run(): a client for $VELOLLM_HOST (and $VELOLLM_API_KEY) around `body`, and every
    ServerError printed as Ollama's CLI prints an error (`Error: ...`) with exit status 1."""

    def run(args: argparse.Namespace) -> int:
        quiet_http_log()
        env = os.environ
        try:
            with ServerClient(server_url(env), api_key=env.get("VELOLLM_API_KEY")) as client:
                return body(args, client)
        except ServerError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1

    return run
