"""What a middleware leaves for the endpoint of the same request: a key of the ASGI scope's "state"
(Starlette's request.state), so it lives and dies with the one request."""

from __future__ import annotations

from typing import Any


def leave(scope: dict[str, Any], key: str, value: Any) -> None:
    scope.setdefault("state", {})[key] = value


def take(scope: dict[str, Any], key: str) -> Any:
    """What was left under `key` for this request (once), or None."""
    state = scope.get("state")
    return state.pop(key, None) if isinstance(state, dict) else None
