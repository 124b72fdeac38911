"""ModelIdentities (velollm/api/model_identity.py) without a server: the identity comes from the loaded engine,
from the files (read at most once per NATIVE_TTL_S, again at once after a change VeloLLM makes), or from
the upstream's listing, never from a round trip per request; cache_key holds it."""

from __future__ import annotations

from types import SimpleNamespace

from velollm.api import model_identity
from velollm.api.model_identity import info_identity
from velollm.api.on_demand import OnDemand
from velollm.api.registry import ModelRegistry
from velollm.cache.key import cache_key
from velollm.errors import ModelNotFound
from velollm.proxy.upstream_listing import UpstreamListing


class ListingUpstream:
    """An Upstream whose `identity` reads a fixed listing, as UpstreamGateway's reads its last one."""

    def __init__(self, listing: UpstreamListing) -> None:
        self.listing = listing

    def identity(self, name: str) -> str:
        return self.listing.digest(name)


def _registry(files: dict[str, str], upstream=None) -> tuple[ModelRegistry, list[str]]:
    reads: list[str] = []

    def resolve(name: str) -> str:
        if name not in files:
            raise ModelNotFound(name)
        return name

    def identify(name: str) -> str:
        reads.append(name)
        return files[name]

    registry = ModelRegistry(upstream, OnDemand(resolve=resolve, load=lambda name: None, identify=identify))
    registry.mark_ready()
    return registry, reads


async def test_files_are_read_once_per_ttl_and_again_after_a_change(monkeypatch):
    files = {"x": "sha-1"}
    registry, reads = _registry(files)
    assert [await registry.identity("x") for _ in range(5)] == ["sha-1"] * 5
    assert reads == ["x"]  # one read for five requests
    files["x"] = "sha-2"  # replaced behind the server's back: seen once the TTL runs out
    monkeypatch.setattr(model_identity, "NATIVE_TTL_S", 0.0)
    registry.identities.clear()
    assert await registry.identity("x") == "sha-2"
    monkeypatch.setattr(model_identity, "NATIVE_TTL_S", 60.0)
    files["x"] = "sha-3"
    registry.store_changed()  # VeloLLM changed the store itself: read again at once
    assert await registry.identity("x") == "sha-3" and reads == ["x", "x", "x"]


async def test_a_pinned_model_is_its_engines_source_and_others_the_upstreams():
    listing = UpstreamListing(kind="ollama", models=({"name": "up:latest", "digest": "abc"},
                                                     {"name": "other:7b", "digest": "def"}))
    registry, reads = _registry({}, ListingUpstream(listing))
    info = SimpleNamespace(digest="", path="/m/x.gguf", size_bytes=10, modified_at=1.5)
    registry.add("pinned", SimpleNamespace(source=SimpleNamespace(info=info)))
    assert await registry.identity("pinned") == info_identity(info) == "file:/m/x.gguf:10:1.5"
    assert await registry.identity("up") == "abc" and await registry.identity("OTHER:7b") == "def"
    assert await registry.identity("nobody") == "" and reads == []


def test_an_openai_listing_has_no_digest():
    assert UpstreamListing(kind="openai", models=({"id": "gpt"},)).digest("gpt") == ""


def test_the_identity_is_part_of_both_keys_and_absent_when_unknown():
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    plain, old, new = (cache_key("/api/chat", body, "t", None, identity) for identity in ("", "sha-1", "sha-2"))
    assert len({plain.exact, old.exact, new.exact}) == 3 and len({plain.context, old.context, new.context}) == 3
    assert cache_key("/api/chat", body, "t") == plain  # a name-only key is what it was before identities


async def test_a_parked_engine_is_keyed_by_the_files_it_would_wake_for():
    """A model evicted to host memory wakes only while its files are unchanged (ModelPool drops it
    otherwise): its key is what the files are now, like a model not loaded."""
    registry, reads = _registry({"x": "sha-new"})
    info = SimpleNamespace(digest="sha-old", path="", size_bytes=0, modified_at=0.0)
    parked = SimpleNamespace(engine=SimpleNamespace(source=SimpleNamespace(info=info)))
    registry.pool.parked._engines["x"] = (parked, 1)
    assert await registry.identity("x") == "sha-new" and reads == ["x"]


