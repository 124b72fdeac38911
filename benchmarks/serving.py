"""Online serving benchmark against any OpenAI-compatible server (VeloLLM, vLLM, llama.cpp, Ollama /v1).

    python benchmarks/serving.py --base-url http://127.0.0.1:8000/v1 --model demo \
        --num-prompts 200 --max-concurrency 16 --input-len 128 --output-len 64
    python benchmarks/serving.py --base-url http://127.0.0.1:8080/v1 --model tiny --request-rate 8
    python benchmarks/serving.py --model llama-3.1-8b --dataset sharegpt-like --num-prompts 1000   # as vLLM's run

Measured as `vllm bench serve` does (shared/reference/serving_features.md §3): every request streams with
stream_options.include_usage; TTFT = first SSE chunk with choices - send time; ITL = gaps between later
chunks (all requests' gaps pooled before percentiles); E2EL = last token chunk - send time; output tokens
from usage.completion_tokens; TPOT = (E2EL - TTFT) / (output tokens - 1) per request; output tok/s =
total output tokens / benchmark duration. Arrivals: Poisson at --request-rate (gamma with --burstiness),
all at once when inf; --max-concurrency caps requests in flight. Prompts are random words, distinct per
request so prefix caches do not flatter repeated runs. Prints a table and one JSON line ("what": "serving").

--dataset sharegpt-like: per request an input and an output length drawn like ShareGPT's (no download, no
network): lognormal, medians 190 (input) and 174 (output) tokens, sigma 0.5 for both, rounded, at least 4,
input at most 1,024 and input + output at most --max-model-len (2,048): vLLM's ShareGPT sampler's filter.
The medians are set so the means are 215 and 197 tokens: 1,000 prompts (seed 0) give 215k input / 198k
output tokens, the totals of vLLM's published 1,000-prompt ShareGPT run (shared/reference/perf_anchors.md,
3b: 215k in / 197k out), so output tok/s compares like for like. On the completions endpoint the prompts
are token ids (exact lengths, random ids in --token-range), on the chat endpoint words (~1 token each).
Every request sends ignore_eos and min_tokens = max_tokens (vLLM and VeloLLM honour both) so each answer
has its drawn length; answers shorter than asked are counted (short_outputs) and make the exit status 1.

Batching criterion (the seed's): before the load, --single-requests requests run one at a time (median
lengths, other prompts); their median TPOT is the single-request TPOT, and TPOT p99 under load / that
must stay <= 2 (printed as tpot_p99_over_single with batching_met).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

_WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
          "government company number group problem fact be have do say get make go know take see come think look "
          "want give use find tell ask seem feel try leave call good new first last long great little own other "
          "old right big high different small large next early young important few public bad same able").split()


# ShareGPT-like lengths (see the module docstring): lognormal(log(median), SIGMA) per side, clipped.
SHAREGPT_INPUT_MEDIAN = 190
SHAREGPT_OUTPUT_MEDIAN = 174
SHAREGPT_SIGMA = 0.5
SHAREGPT_MIN_LEN = 4
SHAREGPT_MAX_INPUT = 1024
SINGLE_TPOT_TARGET = 2.0  # TPOT p99 under load <= 2x the single-request TPOT


@dataclass
class Request:
    prompt: str | list[int]
    input_len: int
    output_len: int


@dataclass
class RequestResult:
    ok: bool = False
    expected_output: int = 0
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


def sharegpt_like_lengths(n: int, seed: int, max_model_len: int = 2048, max_input: int = SHAREGPT_MAX_INPUT,
                          max_output: int | None = None) -> list[tuple[int, int]]:
    """(input, output) token lengths of n requests drawn like ShareGPT's (module docstring), seeded."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(n):
        inp = rng.lognormvariate(math.log(SHAREGPT_INPUT_MEDIAN), SHAREGPT_SIGMA)
        out = rng.lognormvariate(math.log(SHAREGPT_OUTPUT_MEDIAN), SHAREGPT_SIGMA)
        inp = min(max_input, max_model_len - SHAREGPT_MIN_LEN, max(SHAREGPT_MIN_LEN, round(inp)))
        out = min(max_model_len - inp, max_output or max_model_len, max(SHAREGPT_MIN_LEN, round(out)))
        lengths.append((inp, max(1, out)))
    return lengths


def _prompt(rng: random.Random, index: int, length: int, as_ids: bool, token_range: tuple[int, int]) -> str | list[int]:
    if as_ids:
        return [rng.randrange(*token_range) for _ in range(length)]
    return f"{index} {rng.random():.6f} " + " ".join(rng.choice(_WORDS) for _ in range(max(1, length - 2)))


def make_requests(args: argparse.Namespace, n: int, seed: int, single: bool = False) -> list[Request]:
    """The requests of a run (`single`: the one-at-a-time baseline's, median lengths, other prompts)."""
    rng = random.Random(seed)
    if args.dataset == "random":
        return [Request(p, args.input_len, args.output_len) for p in make_prompts(n, args.input_len, seed)]
    if single:
        inp = min(SHAREGPT_INPUT_MEDIAN, args.max_input, args.max_model_len - SHAREGPT_MIN_LEN)
        out = min(SHAREGPT_OUTPUT_MEDIAN, args.max_output or SHAREGPT_OUTPUT_MEDIAN, args.max_model_len - inp)
        lengths = [(inp, out)] * n
    else:
        lengths = sharegpt_like_lengths(n, seed, args.max_model_len, args.max_input, args.max_output)
    as_ids = args.endpoint == "completions" and args.prompt_format == "ids"
    return [Request(_prompt(rng, i, inp, as_ids, tuple(args.token_range)), inp, out)
            for i, (inp, out) in enumerate(lengths)]


def _body(args: argparse.Namespace, prompt: str | list[int], max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "max_tokens": max_tokens, "temperature": args.temperature,
                            "stream": True, "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        body["ignore_eos"] = True  # vLLM / VeloLLM / llama.cpp extra: fixed output length
        body["min_tokens"] = max_tokens  # vLLM / VeloLLM: no stop token ends the answer early either
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
    result = RequestResult(expected_output=body["max_tokens"])
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


async def run(args: argparse.Namespace) -> tuple[list[RequestResult], float, list[RequestResult]]:
    """(the load's results, its duration, the single-request baseline's results)."""
    url = args.base_url.rstrip("/") + ("/chat/completions" if args.endpoint == "chat" else "/completions")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    requests = make_requests(args, args.num_prompts, args.seed)
    limit = asyncio.Semaphore(args.max_concurrency or len(requests))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), headers=headers, limits=limits) as client:
        if args.warmup:
            await send(client, url, _body(args, "warm up", 4))
        single = [await send(client, url, _body(args, r.prompt, r.output_len))
                  for r in make_requests(args, args.single_requests, args.seed + 1_000_003, single=True)]

        async def one(request: Request) -> RequestResult:
            async with limit:
                return await send(client, url, _body(args, request.prompt, request.output_len))

        tasks = []
        start = time.perf_counter()
        for request, gap in zip(requests, _arrival_gaps(len(requests), args.request_rate, args.burstiness, args.seed)):
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(one(request)))
        results = await asyncio.gather(*tasks)
        return list(results), time.perf_counter() - start, single


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "p99": 0.0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"mean": statistics.fmean(values) * 1000, "median": statistics.median(values) * 1000,
            "std": (statistics.pstdev(values) if len(values) > 1 else 0.0) * 1000, "p99": p99 * 1000}


def _tpots(results: list[RequestResult]) -> list[float]:
    return [(r.latency - r.ttft) / (r.output_tokens - 1) for r in results if r.ok and r.output_tokens > 1]


def summarize(results: list[RequestResult], duration: float, single: list[RequestResult] | None = None,
              ) -> dict[str, Any]:
    done = [r for r in results if r.ok]
    total_out = sum(r.output_tokens for r in done)
    total_in = sum(r.prompt_tokens for r in done)
    tpots = _tpots(results)
    single_tpots = _tpots(single or [])
    single_tpot = statistics.median(single_tpots) * 1000 if single_tpots else None
    tpot_p99 = _stats(tpots)["p99"]
    ratio = tpot_p99 / single_tpot if single_tpot else None
    return {
        "short_outputs": sum(r.output_tokens < r.expected_output for r in done),
        "single_requests": len(single_tpots), "single_tpot_ms": single_tpot,
        "tpot_p99_over_single": ratio, "batching_target": SINGLE_TPOT_TARGET,
        "batching_met": None if ratio is None else ratio <= SINGLE_TPOT_TARGET,
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
    print(f"{'answers shorter than asked':<28}{summary['short_outputs']}")
    print(f"{'':<10}{'mean':>10}{'median':>10}{'p99':>10}  (ms)")
    for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2el_ms", "E2EL")):
        s = summary[key]
        print(f"{name:<10}{s['mean']:>10.2f}{s['median']:>10.2f}{s['p99']:>10.2f}")
    if summary["single_tpot_ms"] is not None:
        print(f"single-request TPOT {summary['single_tpot_ms']:.2f} ms (median of {summary['single_requests']} alone); "
              f"TPOT p99 under load / single = {summary['tpot_p99_over_single']:.2f} "
              f"(target <= {SINGLE_TPOT_TARGET:g}: {'met' if summary['batching_met'] else 'not met'})")
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
    p.add_argument("--dataset", choices=["random", "sharegpt-like"], default="random",
                   help="random: --input-len / --output-len for every request; sharegpt-like: lengths drawn "
                        "like ShareGPT's (see above)")
    p.add_argument("--input-len", type=int, default=128, help="prompt length in words (~tokens), random dataset")
    p.add_argument("--output-len", type=int, default=64, help="max_tokens per request, random dataset")
    p.add_argument("--max-model-len", type=int, default=2048, help="sharegpt-like: input + output at most this")
    p.add_argument("--max-input", type=int, default=SHAREGPT_MAX_INPUT, help="sharegpt-like: input at most this")
    p.add_argument("--max-output", type=int, default=None, help="sharegpt-like: output at most this (default: no cap)")
    p.add_argument("--prompt-format", choices=["ids", "text"], default="ids",
                   help="sharegpt-like on the completions endpoint: token ids (exact lengths) or words")
    p.add_argument("--token-range", type=int, nargs=2, default=[16, 940], metavar=("LO", "HI"),
                   help="prompt token ids drawn from [LO, HI): ordinary tokens of the served vocabulary")
    p.add_argument("--single-requests", type=int, default=3,
                   help="requests run one at a time before the load: the single-request TPOT (0: none)")
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
    results, duration, single = asyncio.run(run(args))
    summary = summarize(results, duration, single)
    print_table(summary)
    lengths = ({"input_len": args.input_len, "output_len": args.output_len} if args.dataset == "random" else
               {"seed": args.seed, "max_model_len": args.max_model_len, "max_input": args.max_input,
                "max_output": args.max_output, "prompt_format": args.prompt_format})
    print(json.dumps({"what": "serving", "label": args.label, "base_url": args.base_url, "model": args.model,
                      "endpoint": args.endpoint, "dataset": args.dataset, "num_prompts": args.num_prompts,
                      "max_concurrency": args.max_concurrency, "request_rate": str(args.request_rate),
                      **lengths, **summary}), flush=True)
    if args.ignore_eos and summary["short_outputs"]:
        print(f"error: {summary['short_outputs']} answers shorter than their max_tokens: output tok/s is not "
              "comparable (does the server honour ignore_eos / min_tokens?)", file=sys.stderr)
        return 1
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
