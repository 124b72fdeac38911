"""Our forward over the paged KV cache matches transformers, for every supported architecture."""

from __future__ import annotations

import pytest
import torch
import transformers

from velollm.engine.scheduler import ScheduledBatch

from .conftest import ARCHS
from .helpers import make_engine, random_prompts


def hf_last_logits(folder, prompt: list[int]) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].float()


def our_logits_in_chunks(engine, prompt: list[int], chunk: int) -> list[torch.Tensor]:
    """Run the prompt through the runner `chunk` tokens at a time; logits after every chunk's last token."""
    request = engine.add_request(prompt, _params())
    engine.scheduler.waiting.remove(request)
    logits = []
    for start in range(0, len(prompt), chunk):
        num_new = min(chunk, len(prompt) - start)
        assert engine.block_manager.allocate(request, start + num_new)
        batch = ScheduledBatch([request], [num_new])
        with torch.no_grad():
            inputs = engine.runner.prepare(batch)
            from velollm.engine.forward_context import forward_context

            with forward_context(inputs.metadata, engine.runner.switches):
                hidden = engine.runner.model(inputs.input_ids, inputs.positions)
            logits.append(engine.runner.model.compute_logits(hidden))
        request.num_computed_tokens += num_new
    return logits


def _params():
    from velollm.sampling_params import SamplingParams

    return SamplingParams(temperature=0)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("length", [1, 15, 16, 17, 50])
def test_logits_match_transformers(tiny_models, arch, length):
    folder = tiny_models[arch]
    engine = make_engine(folder)
    prompt = random_prompts([length], seed=length)[0]
    ours = our_logits_in_chunks(engine, prompt, chunk=length)[0]
    ref = hf_last_logits(folder, prompt)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("arch", ["llama-tied-rope3", "qwen3"])
def test_chunked_prefill_matches_whole_prompt(tiny_models, arch):
    """Chunks of 7 tokens attend to the cached prefix in the paged cache, across block boundaries."""
    folder = tiny_models[arch]
    prompt = random_prompts([45], seed=3)[0]
    chunks = our_logits_in_chunks(make_engine(folder), prompt, chunk=7)
    ref = hf_last_logits(folder, prompt)
    for index, logits in enumerate(chunks):
        position = min(7 * (index + 1), len(prompt)) - 1
        positions = slice(position - logits.shape[0] + 1, position + 1)
        assert (logits - ref[positions]).abs().max().item() < 1e-4
