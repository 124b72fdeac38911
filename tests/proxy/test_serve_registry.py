"""ModelRegistry.route with on-demand loading: native first, UnsupportedModel falls back to the upstream,
leases keep a model loaded exactly as long as a request uses it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from velollm.api.generation import EngineCall, GenerationStream
from velollm.api.lease import EngineLease
from velollm.api.on_demand import OnDemand
from velollm.api.registry import ModelRegistry
from velollm.api.targets import NativeTarget, UpstreamTarget
from velollm.errors import ModelNotFound, UnsupportedModel
from velollm.sampling_params import SamplingParams


class Engine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.max_model_len = 64
        self.running = True

    def shutdown(self) -> None:
        self.running = False

    async def generate(self, prompt_token_ids, params, request_id=None):
        from velollm.outputs import RequestDelta

        yield RequestDelta(request_id=request_id, text="ok", token_ids=[1], finish_reason="stop")


class Upstream:
    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.asked: list[tuple[str, str | None]] = []

    async def find(self, name: str, reason: str = "") -> str | None:
        self.asked.append((name, reason))
        return name if name in self.names else None


def upstream_of(target) -> Upstream | None:
    """The upstream a target sends to (None for a native one), checking the name it sends."""
    if isinstance(target, NativeTarget):
        return None
    assert isinstance(target, UpstreamTarget) and target.model in target.upstream.names
    return target.upstream


def registry(upstream: Upstream | None, loads: list[str], describe=None) -> ModelRegistry:
    def resolve(name: str) -> str:
        if name == "cloud":
            raise UnsupportedModel("cloud model")
        if name not in ("a", "a:latest", "b", "huge"):
            raise ModelNotFound(name)
        return name.removesuffix(":latest")

    def load(name: str) -> Engine:
        loads.append(name)
        if name == "huge":
            raise UnsupportedModel("does not fit in memory")
        return Engine(name)

    models = ModelRegistry(upstream, OnDemand(resolve=resolve, load=load, max_loaded_models=1, describe=describe))
    models.mark_ready()
    return models


def test_native_first_then_upstream_then_404():
    async def main() -> None:
        loads: list[str] = []
        upstream = Upstream({"cloud", "huge", "remote"})
        models = registry(upstream, loads)
        route = await models.route("a:latest")
        assert upstream_of(route) is None and route.model.name == "a" and isinstance(route.model.engine, EngineLease)
        route.model.engine.release()  # (held, it would keep "huge" waiting for the one slot)
        assert upstream_of(await models.route("remote")) is upstream
        assert upstream_of(await models.route("cloud")) is upstream
        assert upstream.asked[-1] == ("cloud", "cannot run it natively: cloud model")
        assert upstream_of(await models.route("huge")) is upstream  # loading said it does not fit
        assert upstream.asked[-1] == ("huge", "cannot run it natively: does not fit in memory")
        assert upstream_of(await models.route("huge")) is upstream
        assert loads.count("huge") == 1  # not retried natively at once
        with pytest.raises(ModelNotFound):
            await models.route("nowhere")
        await models.close()

    asyncio.run(main())


def test_unsupported_without_upstream_says_why():
    async def main() -> None:
        models = registry(Upstream(set()), [])
        with pytest.raises(UnsupportedModel, match="cloud model"):
            await models.route("cloud")
        models = registry(None, [])
        with pytest.raises(UnsupportedModel):
            await models.route("cloud")
        with pytest.raises(ModelNotFound):
            await models.route("nowhere")

    asyncio.run(main())


def test_a_lease_holds_the_model_until_its_streams_close():
    async def main() -> None:
        loads: list[str] = []
        models = registry(None, loads)
        route = await models.route("a")
        lease = route.model.engine
        [entry] = models.pool.loaded()
        assert entry.num_active == 1 and lease.max_model_len == 64  # attributes are the engine's
        gen = GenerationStream(lease, [EngineCall([1], SamplingParams(max_tokens=1))], "r")
        await gen.start()
        await gen.collect()
        retry = GenerationStream(lease, [EngineCall([1], SamplingParams(max_tokens=1))], "r2")
        await retry.aclose()
        assert not lease.released  # the first stream still holds it
        await gen.aclose()
        await gen.aclose()  # closing twice releases once
        await asyncio.sleep(0)
        assert lease.released and entry.num_active == 0
        # loading "b" evicts the idle "a"
        b = (await models.route("b")).model
        assert [m.name for m in models.models()] == ["b"] and not entry.engine.engine.running
        b.engine.release()
        await models.close()
        assert loads == ["a", "b"]

    asyncio.run(main())


def test_describe_never_loads():
    class Source:
        def __init__(self, name: str) -> None:
            self.config = SimpleNamespace(max_position_embeddings=4096)
            self.info = SimpleNamespace(name=name, modified_at=123.0)
            self.load_tokenizer = lambda: SimpleNamespace(chat_template="{{ messages }}")

    async def main() -> None:
        loads: list[str] = []
        described: list[str] = []
        upstream = Upstream({"cloud", "remote"})
        models = registry(upstream, loads, describe=lambda name: described.append(name) or Source(name))
        a = (await models.describe("a:latest")).model
        assert (a.name, a.engine.max_model_len, a.engine.tokenizer.chat_template) == ("a", 4096, "{{ messages }}")
        assert a.engine.source.info.name == "a" and a.loaded_at == 123.0
        assert (await models.describe("a")).model is a and described == ["a"]  # described once
        assert upstream_of(await models.describe("cloud")) is upstream
        assert upstream_of(await models.describe("remote")) is upstream
        with pytest.raises(ModelNotFound):
            await models.describe("nowhere")
        assert loads == [] and models.models() == []
        route = await models.route("a")  # loaded now: describe answers with the running engine
        assert (await models.describe("a")).model.engine is route.model.engine._engine
        route.model.engine.release()
        await models.close()

    asyncio.run(main())
