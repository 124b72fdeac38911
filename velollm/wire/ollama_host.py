"""A host variable in Ollama's format (`$OLLAMA_HOST`, and VeloLLM's `$VELOLLM_HOST` read the same way) -> the
base URL a client connects to."""

from __future__ import annotations

import ipaddress
import re

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
_OLLAMA_PORT = 11434
_PORT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.ParseInt(port, 10, 32) reads
_SCHEME_PORTS = {"http": 80, "https": 443}


def parse_ollama_host(value: str | None) -> str:
    """`$OLLAMA_HOST` → the base URL of the Ollama server it names (port 11434 when it names none)."""
    return parse_host(value, _OLLAMA_PORT)


def parse_host(value: str | None, default_port: int) -> str:
    """Ollama's envconfig.Host then ConnectableHost, with `default_port` for Ollama's 11434.

    `host`, `host:port`, `:port`, `[::1]:port`, `scheme://host[:port][/path]`, quotes and spaces around
    trimmed. Without a scheme: http and `default_port`; `http://host` without a port: 80, `https://host`: 443;
    a port that is not a number in 0-65535: the default; a path after the host: the base path of every
    request. A bind-everywhere address (0.0.0.0, ::, none) becomes loopback: where a local client connects.
    """
    value = (value or "").strip().strip("'\"").strip()
    if not value:
        return f"http://127.0.0.1:{default_port}"
    scheme, sep, hostport = value.partition("://")
    if not sep:
        scheme, hostport = "http", value
    else:  # Go compares the scheme as written: `HTTP://` keeps the default port
        default_port = _SCHEME_PORTS.get(scheme, default_port)
    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:  # no port (or not host:port): the whole is the host, an IP as Go writes it
        host, port = _ip(hostport.strip("[]")) or hostport or "127.0.0.1", str(default_port)
    else:
        host, port = split
    number = int(port) if _PORT.fullmatch(port) else -1
    if not 0 <= number <= 65535:
        number = default_port
    host = _connectable(host)
    host = f"[{host}]" if ":" in host else host
    path = path.rstrip("/")
    return f"{scheme}://{host}:{number}" + (f"/{path}" if path else "")


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: (host, port), or None where it fails (no port, too many colons, stray brackets)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1:end + 2] != ":":
            return None
        host, port = hostport[1:end], hostport[end + 2:]
    else:
        host, colon, port = hostport.rpartition(":")
        if not colon or ":" in host:
            return None
    if any(c in host + port for c in "[]"):
        return None
    return host, port


def _ip(text: str) -> str | None:
    """The IP address `text` names, written as Go's net.IP.String writes it; None when it names none."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _connectable(host: str) -> str:
    """Ollama's ConnectableHost: an unspecified address (a server's bind-everywhere) as loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return "::1" if _ip(host) == "::" else host
