"""ModelPool.forget (a model deleted or replaced in the store): unloaded now when idle, when its requests
end when busy, after its load when loading; never re-woken from host memory."""

from __future__ import annotations

import asyncio

from test_proxy_model_pool import FakeEngines

from velollm.api.model_pool import ModelPool


def test_forget_unloads_idle_busy_and_loading_models():
    async def main() -> None:
        engines = FakeEngines(load_seconds=0.2)
        pool = ModelPool(engines.load, max_loaded_models=2, default_keep_alive=60)
        await pool.acquire("idle")
        pool.release("idle")
        await pool.acquire("busy")
        await pool.forget("idle")
        assert engines.loaded == {"busy"}
        await pool.forget("busy")  # in use: its request finishes on it, then it goes
        assert engines.loaded == {"busy"}
        pool.release("busy")
        for _ in range(50):
            if not engines.loaded:
                break
            await asyncio.sleep(0.01)
        assert engines.loaded == set()
        loading = asyncio.ensure_future(pool.acquire("late"))
        await asyncio.sleep(0.05)
        forget = asyncio.ensure_future(pool.forget("late"))
        await loading
        pool.release("late")
        await forget
        for _ in range(50):
            if not engines.loaded:
                break
            await asyncio.sleep(0.01)
        assert engines.loaded == set() and [m.name for m in pool.loaded()] == []
        await pool.close()

    asyncio.run(main())
