"""How a client tells a VeloLLM from the Ollama it imitates: VeloLLM's GET /api/version answers Ollama's
`{"version": ...}` plus `"velollm": "<its own version>"` (the ollama client reads only `version`; a real Ollama
has no such field). A router in front of it reads the field to know that it has a /health, which reports
what /api/version cannot: a dead engine (503 engine_dead), a server still loading or draining. A body
field, not a header, because reverse proxies (nginx) rewrite `Server` and may drop unknown headers."""

from __future__ import annotations

from typing import Any

VELOLLM_FIELD = "velollm"


def version_body(ollama_version: str, velollm_version: str) -> dict[str, str]:
    """The /api/version answer: the Ollama API version VeloLLM speaks, and its own."""
    return {"version": ollama_version, VELOLLM_FIELD: velollm_version}


def velollm_version(body: Any) -> str | None:
    """VeloLLM's version from a parsed /api/version answer, or None for any other server (Ollama's)."""
    value = body.get(VELOLLM_FIELD) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None
