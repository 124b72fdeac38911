"""The virtual model of [routing] (velollm/complexity) as /v1/models and /api/tags list it."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from velollm.wire.timestamps import rfc3339

if TYPE_CHECKING:
    from velollm.api.handler import AppState


def openai_card(state: AppState) -> dict[str, Any] | None:
    """The /v1/models card, or None without routing."""
    if state.router is None:
        return None
    policy = state.router.policy
    return {"id": policy.name, "object": "model", "created": int(state.router.created), "owned_by": "velollm", "root": policy.name,
            "parent": None, "routes_to": list(policy.models)}


def ollama_tag(state: AppState) -> dict[str, Any] | None:
    """The /api/tags entry, or None without routing: no size, a digest of the policy."""
    if state.router is None:
        return None
    policy = state.router.policy
    digest = hashlib.sha256(repr(policy).encode()).hexdigest()
    return {"name": policy.name, "model": policy.name, "modified_at": rfc3339(state.router.created), "size": 0,
            "digest": digest, "details": {"parent_model": "", "format": "", "family": "router", "families": ["router"],
                                          "parameter_size": "", "quantization_level": ""}}


def with_virtual(entry: dict[str, Any] | None, listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The virtual model first, then the listing."""
    return ([entry] if entry is not None else []) + listing
