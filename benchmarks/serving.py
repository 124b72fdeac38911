"""Online serving benchmark against any OpenAI-compatible server (VeloLLM, vLLM, llama.cpp, Ollama /v1).

    python benchmarks/serving.py --base-url http://127.0.0.1:8000/v1 --model demo \
        --num-prompts 200 --max-concurrency 16 --input-len 128 --output-len 64
    python benchmarks/serving.py --base-url http://127.0.0.1:8080/v1 --model tiny --request-rate 8

Measured as `vllm bench serve` does (shared/reference/serving_features.md §3): every request streams with
stream_options.include_usage; TTFT = first SSE chunk with choices - send time; ITL = gaps between later
chunks (all requests' gaps pooled before percentiles); E2EL = last token chunk - send time; output tokens
from usage.completion_tokens; TPOT = (E2EL - TTFT) / (output tokens - 1) per request; output tok/s =
total output tokens / benchmark duration. Arrivals: Poisson at --request-rate (gamma with --burstiness),
all at once when inf; --max-concurrency caps requests in flight. Prompts are random words, distinct per
request so prefix caches do not flatter repeated runs. Prints a table and one JSON line ("what": "serving").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

_WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
          "government company number group problem fact be have do say get make go know take see come think look "
          "want give use find tell ask seem feel try leave call good new first last long great little own other "
          "old right big high different small large next early young important few public bad same able").split()


@dataclass
class RequestResult:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    text: str = ""


def make_prompts(n: int, input_len: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{i} {rng.random():.6f} " + " ".join(rng.choice(_WORDS) for _ in range(max(1, input_len - 2)))
            for i in range(n)]


def _body(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "max_tokens": args.output_len, "temperature": args.temperature,
                            "stream": True, "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        body["ignore_eos"] = True  # vLLM / VeloLLM / llama.cpp extra: fixed output length
    if args.ban_token:
        # For servers without ignore_eos (llama-cpp-python's): a -100 bias keeps EOS from ending answers early.
        body["logit_bias"] = {str(t): -100 for t in args.ban_token}
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _chunk_text(choice: dict[str, Any]) -> str:
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""


async def send(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestResult:
    result = RequestResult()
    start = last = time.perf_counter()
    num_chunks = 0
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                now = time.perf_counter()
                if chunk.get("choices"):
                    num_chunks += bool(_chunk_text(chunk["choices"][0]))
                    if result.ttft == 0.0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    result.text += _chunk_text(chunk["choices"][0])
                if chunk.get("usage"):
                    result.output_tokens = chunk["usage"].get("completion_tokens") or 0
                    result.prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                if chunk.get("error"):
                    result.error = str(chunk["error"])
                    return result
        result.latency = last - start
        if result.output_tokens == 0:
            # No usage in the stream (llama-cpp-python's server): one token per chunk with text, as it sends them.
            result.output_tokens = num_chunks
        result.ok = result.ttft > 0
        if not result.ok:
            result.error = "no token chunk received"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _arrival_gaps(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)  # gamma(shape=burstiness, scale=theta) has mean 1/rate
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


async def run(args: argparse.Namespace) -> tuple[list[RequestResult], float]:
    url = args.base_url.rstrip("/") + ("/chat/completions" if args.endpoint == "chat" else "/completions")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    prompts = make_prompts(args.num_prompts, args.input_len, args.seed)
    limit = asyncio.Semaphore(args.max_concurrency or len(prompts))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), headers=headers, limits=limits) as client:
        if args.warmup:
            await send(client, url, {**_body(args, "warm up"), "max_tokens": 4})

        async def one(prompt: str) -> RequestResult:
            async with limit:
                return await send(client, url, _body(args, prompt))

        tasks = []
        start = time.perf_counter()
        for prompt, gap in zip(prompts, _arrival_gaps(len(prompts), args.request_rate, args.burstiness, args.seed)):
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(one(prompt)))
        results = await asyncio.gather(*tasks)
        return list(results), time.perf_counter() - start


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "p99": 0.0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"mean": statistics.fmean(values) * 1000, "median": statistics.median(values) * 1000,
            "std": (statistics.pstdev(values) if len(values) > 1 else 0.0) * 1000, "p99": p99 * 1000}


def summarize(results: list[RequestResult], duration: float) -> dict[str, Any]:
    done = [r for r in results if r.ok]
    total_out = sum(r.output_tokens for r in done)
    total_in = sum(r.prompt_tokens for r in done)
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in done if r.output_tokens > 1]
    return {
        "completed": len(done), "failed": len(results) - len(done), "duration_s": duration,
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": len(done) / duration, "output_tok_s": total_out / duration,
        "total_tok_s": (total_in + total_out) / duration,
        "ttft_ms": _stats([r.ttft for r in done]), "tpot_ms": _stats(tpots),
        "itl_ms": _stats([gap for r in done for gap in r.itl]), "e2el_ms": _stats([r.latency for r in done]),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'completed / failed':<28}{summary['completed']} / {summary['failed']}")
    print(f"{'duration (s)':<28}{summary['duration_s']:.2f}")
    print(f"{'input / output tokens':<28}{summary['total_input_tokens']} / {summary['total_output_tokens']}")
    print(f"{'request throughput (req/s)':<28}{summary['request_throughput']:.2f}")
    print(f"{'output throughput (tok/s)':<28}{summary['output_tok_s']:.1f}")
    print(f"{'total throughput (tok/s)':<28}{summary['total_tok_s']:.1f}")
    print(f"{'':<10}{'mean':>10}{'median':>10}{'p99':>10}  (ms)")
    for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2el_ms", "E2EL")):
        s = summary[key]
        print(f"{name:<10}{s['mean']:>10.2f}{s['median']:>10.2f}{s['p99']:>10.2f}")
    for error in summary["errors"]:
        print(f"error: {error}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's OpenAI base URL (.../v1)")
    p.add_argument("--model", default="demo")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    p.add_argument("--num-prompts", type=int, default=100)
    p.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most (default: all)")
    p.add_argument("--request-rate", type=float, default=math.inf, help="requests/s, Poisson (default: inf)")
    p.add_argument("--burstiness", type=float, default=1.0, help="1 = Poisson; <1 burstier, >1 steadier")
    p.add_argument("--input-len", type=int, default=128, help="prompt length in words (~tokens)")
    p.add_argument("--output-len", type=int, default=64, help="max_tokens per request")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="do not send ignore_eos (for servers that reject unknown fields)")
    p.add_argument("--ban-token", type=int, action="append", default=[],
                   help="token id sent with logit_bias -100 (repeatable), e.g. the EOS id")
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--label", default="", help="name of this run in the JSON line (e.g. velollm, llama.cpp)")
    args = p.parse_args(argv)
    results, duration = asyncio.run(run(args))
    summary = summarize(results, duration)
    print_table(summary)
    print(json.dumps({"what": "serving", "label": args.label, "base_url": args.base_url, "model": args.model,
                      "endpoint": args.endpoint, "num_prompts": args.num_prompts,
                      "max_concurrency": args.max_concurrency, "request_rate": str(args.request_rate),
                      "input_len": args.input_len, "output_len": args.output_len, **summary}), flush=True)
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
