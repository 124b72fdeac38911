"""The replayed workload of `benchmarks/cache.py replay`: a stream of chat requests where 40% repeat
(20% word for word, 20% rephrased) questions asked earlier, sent with fixed concurrency to `velollm
serve` on the demo model, once with --semantic-cache and once without; hit rate from the
x-velollm-cache headers, throughput as completed requests per second."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cache_pairs import load_pairs

REPO = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="each round runs every configuration once; ratios are per round (other jobs on the "
                             "machine slow rounds down together), the median is reported")


def workload(n: int, seed: int) -> list[str]:
    """60% new questions, 20% exact repeats, 20% paraphrases of questions already asked."""
    rng = random.Random(seed)
    pairs = [p for p in load_pairs() if p.kind == "paraphrase"]
    rng.shuffle(pairs)
    n_new = round(n * 0.6)
    firsts = pairs[:n_new]
    stream = [p.first for p in firsts]
    for i in range(n - n_new):
        at = rng.randrange(n_new // 4, len(stream) + 1)  # after the original has been asked
        asked = [p for p in firsts if p.first in stream[:at]]
        original = rng.choice(asked)
        stream.insert(at, original.first if i % 2 == 0 else original.second)
    return stream


def _start(tmp: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "VELOLLM_CACHE": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "velollm.cli", "serve", "--port", str(port), "--stats-interval",
                             "0", "--kv-cache-memory", "64MiB", *flags], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("velollm serve did not start")


async def _run(url: str, stream: list[str], concurrency: int, max_tokens: int) -> tuple[float, dict[str, int]]:
    labels: dict[str, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in stream:
        queue.put_nowait(q)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            q = queue.get_nowait()
            r = await client.post(f"{url}/v1/chat/completions", json={
                "model": "demo", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True})
            r.raise_for_status()
            label = r.headers.get("x-velollm-cache", "none")
            labels[label] = labels.get(label, 0) + 1

    async with httpx.AsyncClient(timeout=300) as client:
        warm = {"model": "demo", "max_tokens": 2, "messages": [{"role": "user", "content": "warm-up"}]}
        await client.post(f"{url}/v1/chat/completions", json=warm)  # first-use compiles, embedder warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0, labels


def replay(args: argparse.Namespace) -> None:
    stream = workload(args.requests, args.seed)
    repeats = len(stream) - len(set(stream))
    print(f"{len(stream)} chat requests, {len(set(stream))} distinct texts ({repeats} word-for-word repeats), "
          f"40% repeat or rephrase an earlier question; concurrency {args.concurrency}, max_tokens "
          f"{args.max_tokens}, demo model")
    configs = (("no cache", ()), ("--cache", ("--cache",)), ("--semantic-cache", ("--semantic-cache",)))
    rates: dict[str, list[float]] = {name: [] for name, _ in configs}
    ratios: dict[str, list[float]] = {name: [] for name, _ in configs[1:]}
    for r in range(args.rounds):
        for name, flags in configs:
            with tempfile.TemporaryDirectory() as tmp:
                proc, url = _start(Path(tmp), *flags)
                try:
                    seconds, labels = asyncio.run(_run(url, stream, args.concurrency, args.max_tokens))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            hits = labels.get("hit-exact", 0) + labels.get("hit-semantic", 0)
            rates[name].append(len(stream) / seconds)
            print(f"round {r + 1} {name:17s} {len(stream) / seconds:6.2f} req/s ({seconds:6.1f} s)  hit rate "
                  f"{hits / len(stream):5.1%}  " + " ".join(f"{k}={v}" for k, v in sorted(labels.items())), flush=True)
        for name in ratios:
            ratios[name].append(rates[name][-1] / rates["no cache"][-1])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("throughput vs no cache, median of per-round ratios: "
          + ", ".join(f"{k} {statistics.median(v):.2f}x" for k, v in ratios.items()))
