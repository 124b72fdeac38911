"""One model listing of the upstream (its /api/tags or /v1/models), as fetched, with the names looked up as
Ollama compares them and the entries shown in either API's listing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from velollm.wire.names import name_key
from velollm.wire.timestamps import rfc3339, unix_seconds

UpstreamKind = Literal["ollama", "openai"]


@dataclass(frozen=True)
class UpstreamListing:
    """One successful model listing of the upstream, in the upstream's own format."""

    kind: UpstreamKind
    models: tuple[dict[str, Any], ...]
    fetched_at: float = field(default_factory=time.time)

    @cached_property
    def names(self) -> list[str]:
        key = "name" if self.kind == "ollama" else "id"
        return [str(m.get(key) or m.get("model") or "") for m in self.models]

    def has(self, name: str) -> bool:
        """Whether `name` is listed (names compare as Ollama's do: `m` is `m:latest`)."""
        return self.entry(name) is not None

    def entry(self, name: str) -> dict[str, Any] | None:
        """The listed model of that name (names compare as Ollama's do), or None."""
        key = name_key(name)
        return next((model for listed, model in zip(self.names, self.models)
                     if listed == name or name_key(listed) == key), None)

    def digest(self, name: str) -> str:
        """The digest listed for `name`; "" when none is (an OpenAI server, or a name it does not list)."""
        model = self.entry(name)
        return str(model.get("digest") or "") if model is not None else ""

    def as_ollama_tags(self) -> list[dict[str, Any]]:
        """Entries for /api/tags: an Ollama upstream's unchanged, an OpenAI upstream's synthesised."""
        if self.kind == "ollama":
            return list(self.models)
        return [{"name": m.get("id"), "model": m.get("id"), "modified_at": _created(m),
                 "size": 0, "digest": "", "details": {"parent_model": "", "format": "", "family": "",
                                                      "families": None, "parameter_size": "",
                                                      "quantization_level": ""}}
                for m in self.models]

    def as_openai_models(self) -> list[dict[str, Any]]:
        """Entries for /v1/models, ids unchanged."""
        if self.kind == "openai":
            return list(self.models)
        out = []
        for m in self.models:
            name = str(m.get("name") or m.get("model"))
            owner = name.rsplit("/", 1)[0].rsplit("/", 1)[-1] if "/" in name else "library"
            out.append({"id": name, "object": "model", "created": unix_seconds(m.get("modified_at")), "owned_by": owner})
        return out


def _created(model: dict[str, Any]) -> str:
    created = model.get("created")
    return rfc3339(created if isinstance(created, (int, float)) else time.time())
