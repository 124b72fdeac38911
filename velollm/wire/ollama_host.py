"""`$OLLAMA_HOST` in Ollama's format -> the base URL a client connects to."""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
_OLLAMA_PORT = 11434


def parse_ollama_host(value: str | None) -> str:
    """`$OLLAMA_HOST` (Ollama's format) → the base URL a client connects to.

    `host`, `host:port`, `:port`, `scheme://host[:port][/path]`, `[::1]:port`; a bare host gets 11434,
    `http://host` 80 and `https://host` 443 (like Ollama's envconfig.Host), and a bind-everywhere
    address (0.0.0.0, ::) becomes loopback because that is where a local client connects.
    """
    value = (value or "").strip().strip("'\"")
    if not value:
        return DEFAULT_OLLAMA_HOST
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "http", value
        default_port = _OLLAMA_PORT
    else:
        scheme = scheme.lower()
        default_port = 443 if scheme == "https" else 80
    hostport, _, path = rest.partition("/")
    parts = urlsplit(f"//{hostport}")
    host = parts.hostname or ""
    try:
        port = parts.port or default_port
    except ValueError:
        # Ollama falls back to its default port on an invalid one.
        port = default_port
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    path = f"/{path.rstrip('/')}" if path.strip("/") else ""
    return f"{scheme}://{host}:{port}{path}"
