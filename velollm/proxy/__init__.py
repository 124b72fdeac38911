"""Transparent proxy to an upstream Ollama or OpenAI-compatible server: a leaf of the serving layer
(imports velollm.wire, never velollm.api; no torch).

gateway.UpstreamGateway (what the API's registry calls: find a name upstream, forward a request) ·
upstream.Upstream (pooled client, kind probe, listing cache, bounded reads) · upstream_listing (one listing)
· forward.forward (pass-through, or one of the conversions: openai_via_ollama_forward,
ollama_via_openai_forward; both read answers through upstream_answer) · message_buffer (lines / events of a
stream, linear time) · openai_via_ollama / ollama_via_openai (wire-format converters) · schema_format,
prompt_tokens (what some OpenAI-compatible servers need or lack) · sse_error_field (llama.cpp's stream
error) · answer_repair, sse_repair (tool calls) · options (serve flags) · relayed_responses (which upstream
stored a passed-through Responses create; relayed_file keeps that on disk). velollm.router builds one gateway
per backend of `--config` on top of this (its own Upstream subclass reports failures). Another VeloLLM gets
either API passed through unconverted (`Upstream.speaks_both`: configured, or found by the kind probe).
"""
