"""`velollm -v` / `velollm --version`: the version of the server at $VELOLLM_HOST and of this client, in the
words of Ollama's versionHandler (`ollama -v`)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def show_version(env: Mapping[str, str] = os.environ) -> int:
    """`velollm version is X` (the server's); a warning when no server answers or its version is not this
    client's (`Warning: client version is Y`). Always exit status 0, as Ollama's."""
    from velollm import __version__
    from velollm.commands.client import ServerClient, ServerError, server_url
    from velollm.wire.server_version import velollm_version

    with ServerClient(server_url(env), timeout=5.0, api_key=env.get("VELOLLM_API_KEY")) as client:
        try:
            server = velollm_version(client.get("/api/version")) or ""
        except ServerError:
            print("Warning: could not connect to a running VeloLLM server")
            server = ""
    if server:
        print(f"velollm version is {server}")
    if server != __version__:
        print(f"Warning: client version is {__version__}")
    return 0
