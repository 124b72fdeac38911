"""Routing across replicas (issue 16): balancing policies on a multi-turn shared-prefix workload, failover,
and the router path's added latency.

    python benchmarks/routing.py [--replicas 3] [--users 12] [--turns 4] [--rounds 3] [--kv-cache-memory 3MiB]
                                 [--skip-failover] [--skip-overhead]

1. Policies. `--replicas` local `velollm serve` replicas of the demo model with a small KV budget (so a
   replica cannot keep every user's prefix), behind `velollm serve --config` (its own process, no
   engine). Many users, each with a long system prompt of their own and a growing history, chat
   concurrently (streamed, `--max-tokens` per answer). Per policy (round-robin, least-outstanding,
   prefix-aware; fresh users for each, so no policy inherits another's cache): the replicas'
   prefix-cache hit rate (prompt tokens found in the cache / looked up, from their /metrics), mean and
   p50 TTFT seen by the client, and throughput (output tokens/s and requests/s over the whole run);
   `--rounds` runs of each, the order reversed every other round, and their mean.
   Target: prefix-aware >= 2x round-robin's hit rate, throughput no lower.
2. Failover. A mixed load (non-streamed and streamed requests) runs; one replica is killed (SIGKILL)
   mid-run. Printed: failed non-streamed requests (target 0), streams on it that ended with an error
   event (vs. cut without one), time to ejection (target < 2 s), time to re-admission after restart.
3. Overhead. benchmarks/proxy_overhead.py with the paths velollm-api (single upstream) and
   velollm-router (the router with one backend): added p50 latency (target < 0.3 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.router.replicas import Replica  # noqa: E402 (after the path insert; the tests' replica process)

POLICIES = ("round-robin", "least-outstanding", "prefix-aware")
WORDS = ("the model serves tokens from a paged cache while requests arrive and leave; each user keeps a long "
         "system prompt describing their project, their data, the tools they use and the rules to follow, "
         "so every turn repeats thousands of characters the server has already seen once").split()


def router(replicas: list[Replica], folder: Path, policy: str, health_interval: float = 1.0) -> Replica:
    config = folder / f"router-{policy}.toml"
    lines = [f"[router]\npolicy = \"{policy}\"\nhealth_interval_s = {health_interval}\nhealth_timeout_s = 0.5\n"]
    for i, r in enumerate(replicas):
        lines.append(f"[[backends]]\nname = \"r{i}\"\nurl = \"{r.url}\"\nkind = \"velollm\"\n")
    config.write_text("\n".join(lines))
    return Replica(folder / f"router-{policy}", "--config", str(config)).start().wait_healthy()


def scrape(url: str, name: str) -> dict[str, float]:
    """label string -> value for one metric."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key[len(name):]] = float(value)
    return out


def prefix_counters(replicas: list[Replica]) -> tuple[float, float]:
    hits = sum(sum(scrape(r.url, "velollm_prefix_cache_hits_total").values()) for r in replicas)
    queries = sum(sum(scrape(r.url, "velollm_prefix_cache_queries_total").values()) for r in replicas)
    return hits, queries


def system_prompt(seed: str, chars: int) -> str:
    rng = random.Random(seed)
    words: list[str] = [f"[{seed}]"]
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)


async def chat_turn(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]],
                    max_tokens: int) -> tuple[float, int, str, str]:
    """(TTFT s, output tokens, text, backend) of one streamed chat request."""
    body = {"model": "demo", "messages": messages, "max_tokens": max_tokens, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, tokens, text = None, 0, []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        backend = r.headers.get("x-velollm-backend", "")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            for choice in event.get("choices") or []:
                if choice["delta"].get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    text.append(choice["delta"]["content"])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return (ttft if ttft is not None else time.perf_counter() - started), tokens, "".join(text), backend


async def policy_run(url: str, tag: str, args: argparse.Namespace) -> dict[str, Any]:
    ttfts: list[float] = []
    tokens = 0
    homes: dict[int, set[str]] = {}

    async def user(u: int, client: httpx.AsyncClient) -> None:
        nonlocal tokens
        messages = [{"role": "system", "content": system_prompt(f"{tag}-user{u}", args.system_chars)}]
        rng = random.Random(u)
        for t in range(args.turns):
            question = f"turn {t}: " + " ".join(rng.choice(WORDS) for _ in range(args.question_words))
            messages.append({"role": "user", "content": question})
            ttft, n, text, backend = await chat_turn(client, url, messages, args.max_tokens)
            messages.append({"role": "assistant", "content": text})
            ttfts.append(ttft)
            tokens += n
            homes.setdefault(u, set()).add(backend)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=256)) as client:
        await asyncio.gather(*(user(u, client) for u in range(args.users)))
    wall = time.perf_counter() - started
    return {"ttft_mean_ms": statistics.mean(ttfts) * 1e3, "ttft_p50_ms": statistics.median(ttfts) * 1e3,
            "tokens_per_s": tokens / wall, "requests_per_s": len(ttfts) / wall, "wall_s": wall,
            "replicas_per_user": statistics.mean(len(h) for h in homes.values())}


def policies(replicas: list[Replica], folder: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each policy once per round, the order reversed every other round (drift on the machine hits all
    alike); fresh users every time. Returns the mean of the rounds per policy."""
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in POLICIES}
    for round_ in range(args.rounds):
        for policy in (POLICIES if round_ % 2 == 0 else tuple(reversed(POLICIES))):
            front = router(replicas, folder, policy)
            try:
                before = prefix_counters(replicas)
                result = asyncio.run(policy_run(front.url, f"{policy}-{round_}", args))
                after = prefix_counters(replicas)
            finally:
                front.stop()
            queries = after[1] - before[1]
            result["hit_rate"] = (after[0] - before[0]) / queries if queries else 0.0
            runs[policy].append(result)
            print(f"  round {round_ + 1}  {policy:18} hit rate {result['hit_rate']:6.1%}"
                  f"  TTFT mean {result['ttft_mean_ms']:7.1f} ms  p50 {result['ttft_p50_ms']:7.1f} ms"
                  f"  {result['tokens_per_s']:6.1f} tok/s  {result['requests_per_s']:5.2f} req/s"
                  f"  replicas/user {result['replicas_per_user']:.2f}", flush=True)
    means = {p: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
    print(f"  mean of {args.rounds} round(s):")
    for policy, m in means.items():
        print(f"  {policy:18} hit rate {m['hit_rate']:6.1%}  TTFT mean {m['ttft_mean_ms']:7.1f} ms"
              f"  {m['tokens_per_s']:6.1f} tok/s  {m['requests_per_s']:5.2f} req/s", flush=True)
    return means


async def failover_load(url: str, replicas: list[Replica], args: argparse.Namespace) -> dict[str, Any]:
    victim = replicas[-1]
    victim_name = f"r{len(replicas) - 1}"
    outcome = {"whole_ok": 0, "whole_failed": 0, "streams_ok": 0, "streams_error_event": 0, "streams_cut": 0}
    stop_at = time.monotonic() + args.failover_seconds

    async def whole(client: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < stop_at:
            body = {"model": "demo", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 24}
            r = await client.post(url + "/v1/chat/completions", json=body)
            outcome["whole_ok" if r.status_code == 200 else "whole_failed"] += 1

    async def stream(client: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < stop_at:
            body = {"model": "demo", "messages": [{"role": "user", "content": f"story {i}"}], "max_tokens": 96,
                    "stream": True}
            last = ""
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        last = line if line != "data: [DONE]" else last
            if '"error"' in last:
                outcome["streams_error_event"] += 1
            elif '"finish_reason":"length"' in last.replace(" ", "") or '"finish_reason":"stop"' in last.replace(" ", ""):
                outcome["streams_ok"] += 1
            else:
                outcome["streams_cut"] += 1

    async def killer() -> None:
        await asyncio.sleep(args.failover_seconds / 3)
        victim.kill()
        killed = time.perf_counter()
        while True:
            ejected = scrape(url, "velollm_backend_ejected").get(f'{{backend="{victim_name}"}}')
            if ejected == 1:
                outcome["ejected_after_s"] = time.perf_counter() - killed
                return
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=256)) as client:
        await asyncio.gather(killer(), *(whole(client, i) for i in range(args.failover_whole)),
                             *(stream(client, i) for i in range(args.failover_streams)))
    victim.start().wait_healthy()
    restarted = time.perf_counter()
    while scrape(url, "velollm_backend_ejected").get(f'{{backend="{victim_name}"}}') != 0:
        await asyncio.sleep(0.02)
    outcome["readmitted_after_s"] = time.perf_counter() - restarted
    return outcome


def failover(replicas: list[Replica], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    front = router(replicas, folder, "least-outstanding", health_interval=0.5)
    try:
        result = asyncio.run(failover_load(front.url, replicas, args))
    finally:
        front.stop()
    print(f"  non-streamed: {result['whole_ok']} ok, {result['whole_failed']} failed;  streams: {result['streams_ok']} ok,"
          f" {result['streams_error_event']} ended with an error event, {result['streams_cut']} cut without one;"
          f"  ejected {result['ejected_after_s']:.2f} s after the kill, re-admitted {result['readmitted_after_s']:.2f} s"
          f" after the restart was healthy", flush=True)
    return result


def overhead(args: argparse.Namespace) -> str:
    cmd = [sys.executable, str(REPO / "benchmarks" / "proxy_overhead.py"), "--paths", "velollm-api,velollm-router",
           "--loops", "asyncio", "--requests", str(args.overhead_requests), "--streams", "16", "--seconds", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    print("\n".join("  " + line for line in out.splitlines()), flush=True)
    data = json.loads(out.strip().splitlines()[-1])
    added = data["velollm-router"]["p50_ms"] - data["velollm-api"]["p50_ms"]
    print(f"  router path over the single-upstream path: {added:+.3f} ms p50 (target < 0.3 ms)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each policy (order reversed every other)")
    parser.add_argument("--system-chars", type=int, default=3000, help="length of each user's system prompt")
    parser.add_argument("--question-words", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--kv-cache-memory", default="3MiB", help="each replica's KV cache (small on purpose)")
    parser.add_argument("--failover-seconds", type=float, default=12.0)
    parser.add_argument("--failover-whole", type=int, default=6, help="concurrent non-streamed request loops")
    parser.add_argument("--failover-streams", type=int, default=3, help="concurrent streamed request loops")
    parser.add_argument("--overhead-requests", type=int, default=200)
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="velollm-routing-"))
    replica_args = ["--no-upstream", "--max-model-len", "4096", "--kv-cache-memory", args.kv_cache_memory,
                    "--max-num-seqs", "8"]
    replicas = [Replica(folder / f"replica-{i}", *replica_args).start() for i in range(args.replicas)]
    report: dict[str, Any] = {}
    try:
        for r in replicas:
            r.wait_healthy()
        print(f"\n== policies: {args.replicas} replicas (demo, KV {args.kv_cache_memory} each), {args.users} users x "
              f"{args.turns} turns, system prompts of {args.system_chars} chars, {args.max_tokens} tokens per answer ==",
              flush=True)
        report["policies"] = policies(replicas, folder, args)
        rr, pa = report["policies"]["round-robin"], report["policies"]["prefix-aware"]
        print(f"  prefix-aware vs round-robin: hit rate x{pa['hit_rate'] / max(rr['hit_rate'], 1e-9):.2f},"
              f" throughput x{pa['tokens_per_s'] / rr['tokens_per_s']:.2f}, mean TTFT x{pa['ttft_mean_ms'] / rr['ttft_mean_ms']:.2f}",
              flush=True)
        if not args.skip_failover:
            print(f"\n== failover: kill one of {args.replicas} replicas a third into a {args.failover_seconds:g} s run ==",
                  flush=True)
            report["failover"] = failover(replicas, folder, args)
    finally:
        for r in replicas:
            r.stop()
    if not args.skip_overhead:
        print("\n== router path added latency (benchmarks/proxy_overhead.py) ==", flush=True)
        overhead(args)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
