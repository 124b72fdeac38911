"""The engine's text and grammar layer: tokenizers (HF folders and GGUF vocabularies), chat templates,
incremental detokenization, and structured output (JSON schema / regex grammars compiled to token masks
for the sampler). The engine core (scheduler, block manager, runner, sampler) sees only token ids."""
