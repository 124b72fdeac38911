"""Names that do not resolve are remembered for a while (client-chosen, thousands of them): what is kept
per name is the error's message, not the raised error with every frame it went through."""

from __future__ import annotations

import asyncio
import gc

import pytest

from velollm.api.on_demand import OnDemand, OnDemandModels
from velollm.errors import ModelNotFound


class _Payload:
    """A local of the request's frames: alive only while something holds those frames."""


async def _request(models: OnDemandModels, name: str) -> None:
    payload = _Payload()  # noqa: F841 (held by this frame, as a handler holds the request's body)
    await models.resolve(name)


def test_unresolved_names_keep_no_frames_alive():
    def resolve(name: str) -> str:
        raise ModelNotFound(f"model {name!r} not found")

    models = OnDemandModels(OnDemand(resolve=resolve, load=lambda name: None), lambda name: False)

    async def ask_all() -> None:
        for i in range(200):
            with pytest.raises(ModelNotFound, match=f"nope-{i}"):
                await _request(models, f"nope-{i}")
        with pytest.raises(ModelNotFound, match="nope-7"):  # remembered: raised again without resolving
            await _request(models, "nope-7")

    asyncio.run(ask_all())
    gc.collect()
    assert len(models._resolved) == 200
    assert not any(isinstance(o, _Payload) for o in gc.get_objects())
    assert all(e.__traceback__ is None for _, e in models._resolved.values())
