"""Balancing policies, prompt blocks and the backend queue, on plain objects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from velollm.errors import Overloaded
from velollm.router.health import Health
from velollm.router.policy import make_policy
from velollm.router.prompt_blocks import NO_BLOCKS, PromptBlocks, block_hashes, prompt_text
from velollm.router.queue import BackendQueue


@dataclass
class R:
    name: str
    outstanding: int = 0


def test_round_robin_cycles_in_name_order():
    policy = make_policy("round-robin")
    rs = [R("c"), R("a"), R("b")]
    picks = [policy.choose(rs, NO_BLOCKS).name for _ in range(6)]
    assert picks == ["b", "c", "a", "b", "c", "a"]


def test_least_outstanding_picks_the_idlest_and_spreads_ties():
    policy = make_policy("least-outstanding")
    rs = [R("a", 3), R("b", 1), R("c", 2)]
    assert policy.choose(rs, NO_BLOCKS).name == "b"
    idle = [R("a"), R("b"), R("c")]
    assert {policy.choose(idle, NO_BLOCKS).name for _ in range(3)} == {"a", "b", "c"}


def test_prompt_blocks_share_their_prefix():
    system = {"role": "system", "content": "You are a helpful assistant. " * 30}
    turn1 = {"messages": [system, {"role": "user", "content": "first question"}]}
    turn2 = {"messages": turn1["messages"] + [{"role": "assistant", "content": "answer"},
                                              {"role": "user", "content": "second"}]}
    a, b = PromptBlocks.of(turn1, 64), PromptBlocks.of(turn2, 64)
    assert len(a.hashes) >= 14 and b.hashes[:len(a.hashes)] == a.hashes
    other = PromptBlocks.of({"messages": [{"role": "system", "content": "Other. " * 100}]}, 64)
    assert not set(other.hashes) & set(a.hashes)
    # chained: a block equal in text but after a different prefix hashes differently
    assert block_hashes("x" * 64 + "y" * 64, 64)[1] != block_hashes("z" * 64 + "y" * 64, 64)[1]
    assert block_hashes("short", 64) == ()
    assert prompt_text({"prompt": "p", "system": "s"}).endswith("p")
    assert prompt_text({"input": "hi", "instructions": "be brief"}).startswith("system")


def test_prefix_aware_follows_the_prefix_within_the_load_bound():
    policy = make_policy("prefix-aware", load_margin=0.5)
    rs = [R("a"), R("b"), R("c")]
    users = [PromptBlocks.of({"messages": [{"role": "system", "content": f"user {u} " * 100}]}, 64) for u in range(3)]
    homes = []
    for blocks in users:
        chosen = policy.choose(rs, blocks)
        policy.routed(chosen, blocks)
        homes.append(chosen.name)
    assert sorted(homes) == ["a", "b", "c"]  # new prompts spread (least-outstanding, ties in turn)
    for _ in range(3):  # each user's next turn goes home
        for u, blocks in enumerate(users):
            longer = PromptBlocks(blocks.hashes + (hash(("next", u)),))
            assert policy.choose(rs, longer).name == homes[u]
    # a home holding more than its share plus the margin is passed over
    home = next(r for r in rs if r.name == homes[0])
    home.outstanding = 5
    assert policy.choose(rs, users[0]).name != homes[0]


def test_prefix_aware_forgets_least_recently_used_blocks():
    policy = make_policy("prefix-aware", table_size=4)
    r = R("a")
    policy.routed(r, PromptBlocks((1, 2, 3)))
    policy.routed(r, PromptBlocks((4, 5)))
    assert policy.choose([R("b"), r], PromptBlocks((1, 2, 3))).name in ("a", "b")
    assert len(policy._owner) == 4 and 1 not in policy._owner


def test_health_ejects_and_readmits():
    h = Health("a", eject_after_failures=2, readmit_after_s=0.05, active_checks=True)
    h.failure("answered 500")
    assert h.admitted
    h.failure("answered 500")
    assert not h.admitted and h.reason == "answered 500"
    h.probed(True)
    assert h.admitted and h.ejections == 1
    h.failure("refused", unreachable=True)
    assert not h.admitted
    h.probed(False, "refused")
    assert not h.admitted and h.reason == "refused"  # the first reason stays

    passive = Health("b", eject_after_failures=3, readmit_after_s=60, active_checks=False)
    passive.failure("refused", unreachable=True)
    assert not passive.admitted
    passive.ejected_at -= 60  # readmit_after_s passed (a 0.05 s wait also passed in a stall before the check above)
    assert passive.admitted  # tried again after readmit_after_s
    passive.success()
    assert not passive.ejected


def test_queue_keeps_arrival_order_and_bounds():
    async def main() -> None:
        q = BackendQueue(limit=1, max_queue=2, timeout_s=5)
        first = await q.acquire()
        order: list[int] = []

        async def wait(i: int) -> None:
            slot = await q.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            slot.release()

        tasks = [asyncio.create_task(wait(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        assert (q.in_flight, q.waiting, q.outstanding) == (1, 2, 3)
        with pytest.raises(Overloaded):
            await q.acquire()  # queue full
        first.release()
        first.release()  # idempotent
        await asyncio.gather(*tasks)
        assert order == [0, 1] and (q.in_flight, q.waiting) == (0, 0)

        held = await q.acquire()
        quick = BackendQueue(limit=1, max_queue=4, timeout_s=0.05)
        await quick.acquire()
        with pytest.raises(Overloaded, match="no slot free"):
            await quick.acquire()
        assert quick.waiting == 0
        cancelled = asyncio.create_task(q.acquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert q.waiting == 0
        held.release()
        assert q.in_flight == 0

    asyncio.run(main())


def test_names_nobody_serves_leave_no_policy_behind():
    """Model names are client-chosen: one nobody serves answers 503 without adding a policy (a table per
    name would grow for the server's lifetime)."""
    from starlette.requests import Request

    from velollm.router.config import RoutingFile
    from velollm.router.router import Router

    router = Router(RoutingFile())
    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []})

    async def ask(name: str) -> int:
        return (await router.forward(request, {"model": name, "messages": []})).status_code

    assert {asyncio.run(ask(f"nobody-{i}")) for i in range(100)} == {503}
    assert router._policies == {}
