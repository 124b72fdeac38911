"""LLMEngine.sleep / wake: the KV cache released and allocated again, the weights kept, same answers."""

from __future__ import annotations

from .helpers import greedy, make_engine, random_prompts, run_all


def test_sleep_releases_kv_and_wake_answers_the_same(llama_folder):
    engine = make_engine(llama_folder)
    prompts = random_prompts([40, 70], seed=3)
    before = [o.token_ids for o in run_all(engine, prompts, greedy(12))]
    weights = engine.runner.model.model.embed_tokens.weight
    engine.sleep()
    assert engine.runner.kv_caches == []
    engine.wake()
    assert engine.runner.model.model.embed_tokens.weight is weights  # not loaded again
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert not engine.block_manager.hash_to_block  # the old prefix cache pointed into the released KV
    assert [o.token_ids for o in run_all(engine, prompts, greedy(12))] == before
    engine.close()


def test_sleep_aborts_what_was_running(llama_folder):
    engine = make_engine(llama_folder)
    request = engine.add_request(random_prompts([20])[0], greedy(8))
    engine.step()
    engine.sleep()
    assert request.finished and not engine.requests and engine.num_aborted == 1
    engine.wake()
    assert [len(o.token_ids) for o in run_all(engine, random_prompts([20]), greedy(8))] == [8]
    engine.close()
