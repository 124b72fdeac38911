"""Per-body cost of reading a request body (velollm.wire.json_body.parse_json) against json.loads alone.

Bodies: a typical agent chat (system prompt, a few turns, one tool), and three 1 MB bodies: one long
ASCII message, one long message of non-ASCII text as `json.dumps` sends it (\\uXXXX escapes, emoji as
surrogate pairs), and 2,000 short messages (many nodes to walk). One CPU thread; prints one JSON row
per body: microseconds for json.loads and for check_json on its result (each the fastest of 7 rounds,
as the machine may be shared), and for parse_json (both, plus its error handling).

    python benchmarks/json_body.py
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from velollm.hw.detect import cpu_name
from velollm.wire.json_body import check_json, parse_json


def _chat() -> dict[str, Any]:
    return {
        "model": "qwen3:0.6b",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and cite sources."},
            {"role": "user", "content": "What is the weather in Paris today, and should I bring an umbrella?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 14.5, \"rain_mm\": 3.2}"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                            "unit": {"type": "string", "enum": ["c", "f"]}},
                           "required": ["city"]}}}],
        "temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "stream": True,
    }


def _one_message(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0.2}


def bodies() -> dict[str, bytes]:
    ascii_text = ("def f(x):\n    return x * 2  # some pasted code\n" * 30_000)[:1_000_000]
    unicode_text = ("Grüße aus Köln, 東京の天気 🌧️ " * 60_000)[:310_000]  # ~1 MB once escaped
    many = {"model": "m", "messages": [{"role": "user" if i % 2 else "assistant", "content": "x" * 440}
                                       for i in range(2_000)]}
    return {
        "chat (typical agent turn)": json.dumps(_chat()).encode(),
        "1 MB, one ASCII message": json.dumps(_one_message(ascii_text)).encode(),
        "1 MB, one non-ASCII message (escaped)": json.dumps(_one_message(unicode_text)).encode(),
        "1 MB, 2000 messages": json.dumps(many).encode(),
    }


def per_call_us(fn: Callable[[], Any], budget_s: float = 0.5) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s / 5:
        fn()
        n += 1
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return min(samples) * 1e6


def main() -> None:
    cpu = cpu_name()
    for name, raw in bodies().items():
        value = json.loads(raw)
        loads = per_call_us(lambda: json.loads(raw))
        check = per_call_us(lambda: check_json(value))
        parse = per_call_us(lambda: parse_json(raw))
        print(json.dumps({"what": "json_body", "body": name, "bytes": len(raw), "json_loads_us": round(loads, 1),
                          "check_json_us": round(check, 1), "parse_json_us": round(parse, 1), "cpu": cpu}),
              flush=True)


if __name__ == "__main__":
    main()
