"""The response cache on `/v1/responses` (`velollm serve --semantic-cache`, demo model), through the
official openai client: a hit is a new response (new ids, stored when `store` says so), streamed as the
SDK expects; requests that continue a stored response are never answered from the cache."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.cache.conftest import client

pytestmark = pytest.mark.slow


def create(server: ServerHandle, **kw):
    kw = {"model": "demo", "max_output_tokens": 6, "temperature": 0, **kw}
    raw = client(server).responses.with_raw_response.create(**kw)
    return raw.headers.get("x-velollm-cache"), raw.parse()


def stored_after(server: ServerHandle, label: str, before: float) -> None:
    """Waits for the miss's answer to be stored (it is stored after the response went out)."""
    assert label == "miss"
    assert server.wait_metric("velollm_cache_entries", lambda v: v > before) > before


def test_miss_then_exact_hit_is_a_new_response(cached):
    before = cached.metric("velollm_cache_entries")
    hits = cached.metric("velollm_cache_hits_total", kind="exact")
    requests = cached.metric("velollm_requests_total", model="demo", endpoint="/v1/responses", status="200")
    label, first = create(cached, input="Name three rivers in Europe.", instructions="Be brief.")
    stored_after(cached, label, before)
    label, again = create(cached, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Name three rivers in Europe."}]}], instructions="Be brief.")
    assert label == "hit-exact"  # a text input and the one message item it stands for are one request
    assert again.output_text == first.output_text and again.status == first.status
    assert again.id != first.id and again.output[0].id != first.output[0].id
    assert again.usage.input_tokens == first.usage.input_tokens
    assert again.usage.input_tokens_details.cached_tokens == first.usage.input_tokens
    assert cached.metric("velollm_cache_hits_total", kind="exact") == hits + 1
    assert cached.metric("velollm_requests_total", model="demo", endpoint="/v1/responses",
                         status="200") == requests + 2
    assert create(cached, input="Name three rivers in Europe.", instructions="Be terse.")[0] == "miss"


def test_a_streamed_hit_is_the_event_sequence_the_sdk_reads(cached):
    before = cached.metric("velollm_cache_entries")
    label, first = create(cached, input="Write one word about snow.")
    stored_after(cached, label, before)
    kw = {"model": "demo", "input": "Write one word about snow.", "max_output_tokens": 6, "temperature": 0}
    with client(cached).responses.with_streaming_response.create(stream=True, **kw) as raw:
        assert raw.headers["x-velollm-cache"] == "hit-exact"
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == first.status.join(
        ["response.", ""])
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == first.output_text and events[-1].response.id != first.id
    with client(cached).responses.stream(**kw) as stream:  # the SDK's accumulator checks every event
        final = list(stream)[-1].response  # (get_final_response wants `completed`; 6 tokens end `incomplete`)
    assert final.output_text == first.output_text and final.id not in (first.id, events[-1].response.id)


def test_a_streamed_miss_is_stored_and_answers_a_whole_request(cached):
    before = cached.metric("velollm_cache_entries")
    kw = {"model": "demo", "input": "Say something about rain.", "max_output_tokens": 6, "temperature": 0}
    with client(cached).responses.with_streaming_response.create(stream=True, **kw) as raw:
        assert raw.headers["x-velollm-cache"] == "miss"
        live = list(raw.parse())[-1].response
    stored_after(cached, "miss", before)
    label, hit = create(cached, input="Say something about rain.")
    assert label == "hit-exact" and hit.output_text == live.output_text and hit.id != live.id


def test_a_hit_echoes_the_budget_its_answer_ran_with(cached):
    """A max_output_tokens past the context is echoed as the budget the live answer ran with (what fits), the
    hit's too: the hit's request is the same, not its clamp (10**30 was echoed as sent)."""
    before = cached.metric("velollm_cache_entries")
    label, first = create(cached, input="Count to three.", max_output_tokens=10**30)
    assert 0 < first.max_output_tokens < 512
    stored_after(cached, label, before)
    for stream in (False, True):
        kw = {"model": "demo", "input": "Count to three.", "max_output_tokens": 10**30, "temperature": 0}
        with client(cached).responses.with_streaming_response.create(stream=stream, **kw) as raw:
            assert raw.headers["x-velollm-cache"] == "hit-exact"
            hit = list(raw.parse())[-1].response if stream else raw.parse()
        assert hit.output_text == first.output_text and hit.max_output_tokens == first.max_output_tokens


def test_a_hit_is_stored_and_can_be_continued(cached):
    before = cached.metric("velollm_cache_entries")
    label, first = create(cached, input="Describe a lighthouse.")
    stored_after(cached, label, before)
    label, hit = create(cached, input="Describe a lighthouse.")
    assert label == "hit-exact"
    kept = client(cached).responses.retrieve(hit.id)
    assert kept.id == hit.id and kept.output_text == first.output_text and kept.output[0].id == hit.output[0].id
    items = client(cached).responses.input_items.list(hit.id)
    assert [i.content[0].text for i in items.data] == ["Describe a lighthouse."]
    label, follow = create(cached, input="And at dawn?", previous_response_id=hit.id)
    assert label == "bypass" and follow.previous_response_id == hit.id and follow.status in ("completed", "incomplete")
    label, unstored = create(cached, input="Describe a lighthouse.", store=False)
    assert label == "hit-exact"  # store is how the answer is kept, not what it is
    with pytest.raises(openai.NotFoundError):
        client(cached).responses.retrieve(unstored.id)


def test_continued_conversations_are_never_answered_from_the_cache(cached):
    bypassed = cached.metric("velollm_cache_bypass_total", reason="stateful")
    a = create(cached, input="Think of a colour.")[1]
    b = create(cached, input="Think of an animal.")[1]
    labels = []
    for previous in (a.id, b.id, a.id):  # the same follow-up text after other turns, and again
        label, follow = create(cached, input="Now name it.", previous_response_id=previous)
        labels.append(label)
        assert follow.previous_response_id == previous
    assert labels == ["bypass"] * 3
    assert cached.metric("velollm_cache_bypass_total", reason="stateful") == bypassed + 3


def test_a_paraphrase_hits_the_semantic_tier(cached):
    before = cached.metric("velollm_cache_entries")
    label, first = create(cached, input="What is the capital of Australia?")
    stored_after(cached, label, before)
    label, para = create(cached, input="What's the capital city of Australia?")
    assert label == "hit-semantic" and para.output_text == first.output_text
    assert create(cached, input="What is the capital of Austria?")[0] == "miss"
