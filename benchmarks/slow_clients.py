"""Real clients beside slow and idle ones: `velollm serve` on the demo model, started with the soft open-files
limit most shells and systemd hand down (1024), then

1. baseline: /health and a 4-token /v1/chat/completions, one after the other, median and worst latency;
2. the same while --slow sockets hold half a request line and --idle sockets have sent nothing, all opened at
   once; then how long until the server has closed every one of them (the --header-timeout), and the
   server's resident memory before, while they are held, and after;
3. --streams concurrent /api/generate streams (2 tokens each), every connection held until all are answered
   (more than the inherited 1024 allows without the raised limit): seconds until all answered.

Prints one JSON row per part, with the CPU and the load average.

    python benchmarks/slow_clients.py [--slow 1000] [--idle 1000] [--header-timeout 10] [--streams 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.serve_process import start_serve, stop_serve
from velollm.hw.detect import cpu_name

INHERITED_SOFT_LIMIT = 1024
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def emit(**row) -> None:
    print(json.dumps({**row, "cpu": cpu_name(), "cores": os.cpu_count(),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)


def _inherited_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(INHERITED_SOFT_LIMIT, hard), hard))


def latencies(url: str, rounds: int) -> dict[str, float]:
    health, chat = [], []
    with httpx.Client(timeout=30) as client:
        for _ in range(rounds):
            t0 = time.perf_counter()
            assert client.get(f"{url}/health").status_code == 200
            health.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert client.post(f"{url}/v1/chat/completions", json=CHAT).status_code == 200
            chat.append(time.perf_counter() - t0)
    ms = lambda xs, f: round(1000 * f(xs), 1)
    return {"health_ms_median": ms(health, statistics.median), "health_ms_max": ms(health, max),
            "chat_ms_median": ms(chat, statistics.median), "chat_ms_max": ms(chat, max)}


def rss_mib(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def slow_and_idle(url: str, pid: int, num_slow: int, num_idle: int, rounds: int) -> None:
    port = int(url.rsplit(":", 1)[1])
    before = rss_mib(pid)
    t0 = time.perf_counter()
    slow = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(num_slow)]
    for s in slow:
        s.sendall(b"POST /v1/chat/completions HTT")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(num_idle)]
    opened_s = time.perf_counter() - t0
    row = latencies(url, rounds)
    held = rss_mib(pid)
    for s in slow + idle:
        assert s.recv(1) == b""
    closed_s = time.perf_counter() - t0
    for s in slow + idle:
        s.close()
    time.sleep(1)
    emit(what="slow and idle sockets", slow=num_slow, idle=num_idle, opened_s=round(opened_s, 2),
         all_closed_by_server_s=round(closed_s, 2), rss_mib_before=before, rss_mib_held=held,
         rss_mib_after=rss_mib(pid), **row)


async def held_streams(url: str, num_streams: int) -> tuple[int, float]:
    done = asyncio.Event()
    answered = 0
    body = {"model": "demo", "prompt": "hello", "options": {"num_predict": 2, "temperature": 0}}

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal answered
        async with client.stream("POST", f"{url}/api/generate", json=body) as response:
            lines = [line async for line in response.aiter_lines() if line]
            if response.status_code == 200 and json.loads(lines[-1]).get("done"):
                answered += 1
            if answered == num_streams:
                done.set()
            await done.wait()

    limits = httpx.Limits(max_connections=num_streams, max_keepalive_connections=num_streams)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        try:
            await asyncio.wait_for(asyncio.gather(*(one(client) for _ in range(num_streams))), 300)
        except (asyncio.TimeoutError, httpx.HTTPError):
            done.set()
    return answered, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slow", type=int, default=1000)
    p.add_argument("--idle", type=int, default=1000)
    p.add_argument("--header-timeout", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds the client ends
    wanted = args.slow + args.idle + args.streams + 200
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    proc, url, log, _ = start_serve(Path(tempfile.mkdtemp()), "--model", "demo", "--no-upstream",
                                    "--max-model-len", "256", "--kv-cache-memory", "64MiB",
                                    "--max-queue", str(max(512, args.streams)),
                                    "--header-timeout", str(args.header_timeout), preexec_fn=_inherited_limit)
    try:
        raised = [line.split(": ", 1)[1] for line in log.read_text().splitlines() if "open-files limit" in line]
        emit(what="baseline", open_files=raised, **latencies(url, args.rounds))
        slow_and_idle(url, proc.pid, args.slow, args.idle, args.rounds)
        answered, took = asyncio.run(held_streams(url, args.streams))
        emit(what="held streams", streams=args.streams, answered=answered, seconds=round(took, 2),
             inherited_soft_limit=INHERITED_SOFT_LIMIT)
    finally:
        stop_serve(proc)


if __name__ == "__main__":
    main()
