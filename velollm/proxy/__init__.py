"""Transparent proxy to an upstream Ollama or OpenAI-compatible server: a leaf of the serving layer
(imports velollm.wire, never velollm.api; no torch).

gateway.UpstreamGateway (what the API's registry calls: find a name upstream, forward a request) ·
upstream.Upstream (pooled client, kind probe, listing cache, bounded reads) · forward.forward
(pass-through or conversion, streamed) · message_buffer (lines / events of a stream, linear time) ·
openai_via_ollama / ollama_via_openai (wire-format converters) · answer_repair, sse_repair (tool calls)
· options (serve flags).
"""
