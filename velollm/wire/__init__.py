"""What the HTTP API (velollm/api) and the upstream proxy (velollm/proxy) share on the wire, one copy
each: SSE / NDJSON framing (framing.py, streaming.py), error bodies of both formats (errors.py), RFC 3339
timestamps (timestamps.py), Ollama answer objects (ollama_answer.py), Ollama model names (names.py), $OLLAMA_HOST (ollama_host.py), OpenAI's deprecated function calling as tools
(legacy_functions.py) and cancelling
work when the client goes away (disconnect.py). Imports nothing else of VeloLLM but velollm.errors.
"""
