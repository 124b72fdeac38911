"""Transparent proxy to an upstream Ollama or OpenAI-compatible server (no torch imports here).

upstream.Upstream (pooled client, kind probe, listing cache) · router.ModelRouter (native / upstream /
404) · forward.forward (Starlette handler: pass-through or conversion, streamed) ·
openai_via_ollama / ollama_via_openai (wire-format converters) · options (serve flags).
"""
