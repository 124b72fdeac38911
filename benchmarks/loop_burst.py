"""Is the event loop free during a burst? `velollm serve` on the demo model; --requests concurrent streamed
requests (half /api/generate, half /v1/chat/completions, --tokens tokens each) fired at once from this
process, while a separate process probes /health every 50 ms. Prints one JSON row: the probes' median and
worst latency, the burst's seconds, how many requests were answered, the CPU seconds the server spent (all
threads, and its event-loop thread) and this client process spent, the CPU and the load average; then the
server's own loop lag (a thread in it posts a callback every 20 ms and times how long until it runs: median,
p99, max, and each lag over 100 ms with its time, on the burst's clock) and the five worst probes with when
they came.

--probe-in-client probes from this process's event loop instead, beside the burst's 600 client streams, as a
test that holds its streams and probes in one asyncio loop does: its latency then measures this loop.
--profile FILE runs the server's event-loop thread (its main thread) under cProfile from uvicorn's startup on,
timed by the thread's CPU time (wall time would count its waits for the GIL), and prints the top entries by
total and cumulative time (the engine's step thread and the worker threads are not profiled);
--sample samples the loop thread's Python stack every 5 ms from a thread in the server and prints the share
of samples where the loop was busy, the busiest leaves and stacks, and what every thread was doing while the
loop lagged over 50 ms (uvicorn runs uvloop, whose callbacks asyncio's debug mode does not time).

What it showed (2-core AMD EPYC, load average about 2, 600 requests x 4 tokens): the server spends about
2.2 CPU-s on the whole burst, 1.3 of them on its loop thread (about 2 ms per streamed request, spread over
the ASGI stack: uvicorn's send, Starlette's exception/CORS middleware, our guards, the handlers, JSON,
the access log; no entry over 5 %, nothing growing with the number of requests), while the client process
spends about 12 CPU-s and sets the burst's 13-15 s. A probe from its own process: median 2 ms, worst 250-370
ms, in the first second of the burst while the 600 requests arrive; the server's loop lag p99 20-30 ms, max
60-370 ms. The same probe in the client's loop (--probe-in-client): worst 9.5-11.5 s, which is the client's
loop busy with its own 600 streams, not the server's.

    python benchmarks/loop_burst.py [--requests 600] [--tokens 4] [--probe-in-client] [--profile FILE] [--sample]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.serve_process import free_port, stop_serve
from velollm.hw.detect import cpu_name

PROBE_INTERVAL_S = 0.05

# Run as the server: with --profile, its main thread (the event loop's) under cProfile, stats dumped when uvicorn
# returns; with --sample, a thread that samples the main thread's stack every 5 ms and, at exit, prints the
# share of samples where the loop was busy (not waiting in its selector) and the busiest stacks.
_SERVE = """
import asyncio, cProfile, collections, sys, threading, time
from velollm.cli import main
main_id = threading.get_ident()
stacks, stalls, idle, busy = collections.Counter(), collections.Counter(), [0], [0]
stop = threading.Event()
IDLE = ("asyncio/runners.py", "uvloop/__init__.py")  # the frame that called run_until_complete: the loop waits

def sample():
    while not stop.wait(0.005):
        frame = sys._current_frames().get(main_id)
        if frame is None:
            continue
        if frame.f_code.co_filename.endswith(IDLE):
            idle[0] += 1
            continue
        busy[0] += 1
        stacks[stack_of(frame, {depth})] += 1


def stack_of(frame, depth):
    names = []
    while frame is not None and len(names) < depth:
        code = frame.f_code
        names.append(f"{{code.co_filename.split('site-packages/')[-1].split('loopstall/')[-1]}}:{{frame.f_lineno}} "
                     f"{{code.co_name}}")
        frame = frame.f_back
    return tuple(reversed(names))

lags = []

def heartbeat(loop):
    while not stop.wait(0.02):
        sent = time.perf_counter()
        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (lags.append((time.perf_counter() - sent, sent)), done.set()))
        if done.wait(0.05) or not {sample}:
            done.wait()
            continue
        while not done.wait(0.01):  # a stall: what every thread is doing
            names = {{t.ident: t.name for t in threading.enumerate()}}
            for ident, frame in sys._current_frames().items():
                if ident != threading.get_ident():
                    stalls[(names.get(ident, "?").split(" ")[0].split("_")[0], stack_of(frame, 6 if ident != main_id else {depth}))] += 1

import uvicorn
_startup = uvicorn.Server.startup
async def _startup_with_heartbeat(self, *args, **kwargs):
    threading.Thread(target=heartbeat, args=(asyncio.get_running_loop(),), daemon=True).start()
    if profile is not None:  # from here: the serving, not the imports and the model load before it
        profile.enable()
    return await _startup(self, *args, **kwargs)
uvicorn.Server.startup = _startup_with_heartbeat
if {sample}:
    threading.Thread(target=sample, daemon=True).start()
profile = cProfile.Profile(time.thread_time) if {out!r} else None  # CPU time: not the GIL waits
try:
    main(sys.argv[1:])
finally:
    if profile is not None:
        profile.disable()
        profile.dump_stats({out!r})
    stop.set()
    for lag, sent in lags:
        if lag > 0.1:
            print(f"LOOP LAG EVENT {{1000 * lag:.0f}} ms at perf_counter {{sent:.3f}}", flush=True)
    lags = sorted(lag for lag, _ in lags)
    if lags:
        print(f"LOOP LAG ms: n {{len(lags)}} median {{1000 * lags[len(lags) // 2]:.1f}} p99 "
              f"{{1000 * lags[int(len(lags) * 0.99)]:.1f}} max {{1000 * lags[-1]:.1f}} "
              f"over 100 ms: {{sum(x > 0.1 for x in lags)}}", flush=True)
    if {sample}:
        total = idle[0] + busy[0]
        print(f"LOOP SAMPLES {{total}} busy {{busy[0]}} ({{100 * busy[0] / max(total, 1):.0f}}%)", flush=True)
        leaves = collections.Counter()
        for stack, n in stacks.items():
            leaves[stack[-1]] += n
        for leaf, n in leaves.most_common(15):
            print(f"LOOP LEAF {{n:6d}} {{leaf}}", flush=True)
        for (thread, stack), n in stalls.most_common({top}):
            print(f"LOOP STALL {{n}} {{thread}}" + "".join("\\n    " + f for f in stack), flush=True)
        for stack, n in stacks.most_common({top}):
            print(f"LOOP STACK {{n}}" + "".join("\\n    " + f for f in stack), flush=True)
"""


_PROBE = f"""
import signal, sys, time, httpx
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with httpx.Client(timeout=60) as client:
    try:
        while True:
            t0 = time.perf_counter()
            assert client.get(sys.argv[1] + "/health").status_code == 200
            print(time.perf_counter() - t0, t0, flush=True)
            time.sleep({PROBE_INTERVAL_S})
    except SystemExit:
        pass
"""


def cpu_by_thread(process: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) per thread id; the main thread's (the event loop's) id is the pid."""
    return {t.id: t.user_time + t.system_time for t in process.threads()}


def start(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "VELOLLM_CACHE": str(tmp / "cache")}
    for name in ("VELOLLM_API_KEY", "OLLAMA_HOST"):
        env.pop(name, None)
    code = _SERVE.format(sample=args.sample, out=args.profile or "", depth=args.depth, top=args.top)
    serve = ["serve", "--port", str(port), "--stats-interval", "0", "--model", "demo", "--no-upstream",
             "--max-model-len", "256", "--kv-cache-memory", "64MiB", "--max-queue", str(max(512, args.requests))]
    proc = subprocess.Popen([sys.executable, "-c", code, *serve], cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    with httpx.Client(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"velollm serve exited:\n{log.read_text()[-3000:]}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return proc, url, log
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"velollm serve did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)


async def burst(url: str, num: int, tokens: int, prober: subprocess.Popen | None) -> dict:
    generate = {"model": "demo", "prompt": "hello there", "stream": True,
                "options": {"num_predict": tokens, "temperature": 0}}
    chat = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}], "stream": True,
            "max_tokens": tokens, "temperature": 0}
    answered = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal answered
        path, body = ("/api/generate", generate) if i % 2 == 0 else ("/v1/chat/completions", chat)
        async with client.stream("POST", f"{url}{path}", json=body) as response:
            lines = [line async for line in response.aiter_lines() if line]
            if response.status_code == 200 and lines and (lines[-1] == "data: [DONE]" or
                                                          json.loads(lines[-1]).get("done")):
                answered += 1

    # The probe runs in its own process (`prober`): in this one (--probe-in-client), its latency also counts this loop's
    # own work on the burst's client streams, which on 2 cores is most of it.
    probes: list[float] = []
    stop = asyncio.Event()

    async def probe_here() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                assert (await client.get(f"{url}/health")).status_code == 200
                probes.append(time.perf_counter() - t0)
                await asyncio.sleep(PROBE_INTERVAL_S)

    if prober is None:
        prober_task = asyncio.create_task(probe_here())
    await asyncio.sleep(0.5)
    limits = httpx.Limits(max_connections=num, max_keepalive_connections=num)
    t0 = time.perf_counter()  # CLOCK_MONOTONIC: the server's LOOP LAG EVENT times are on the same clock
    print(f"BURST starts at perf_counter {t0:.3f}", flush=True)
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        await asyncio.gather(*(one(client, i) for i in range(num)), return_exceptions=True)
    took = time.perf_counter() - t0
    if prober is None:
        stop.set()
        await prober_task
    else:
        prober.terminate()
        lines = (await asyncio.to_thread(prober.communicate))[0].splitlines()
        timed = [(float(a), float(b) - t0) for a, b in (line.split() for line in lines)]
        probes = [a for a, _ in timed]
        print("BURST worst probes (ms, s after the burst's start):",
              [(round(1000 * a), round(b, 2)) for a, b in sorted(timed, reverse=True)[:5]], flush=True)
    ms = lambda f: round(1000 * f(probes), 1)
    return {"requests": num, "answered": answered, "tokens": tokens, "burst_s": round(took, 2),
            "probes": len(probes), "health_ms_median": ms(statistics.median), "health_ms_max": ms(max)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--profile", help="dump the loop thread's cProfile stats here and print the top entries")
    p.add_argument("--sample", action="store_true", help="sample the loop thread's stack (see above)")
    p.add_argument("--depth", type=int, default=14, help="frames kept per sampled stack")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--probe-in-client", action="store_true",
                   help="probe from this process's event loop, beside the burst's clients (as a test would)")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.requests + 200
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    tmp = Path(tempfile.mkdtemp())
    proc, url, log = start(args, tmp)
    try:
        server = psutil.Process(proc.pid)
        before, client_before = cpu_by_thread(server), time.process_time()
        prober = None if args.probe_in_client else subprocess.Popen([sys.executable, "-c", _PROBE, url],
                                                                     stdout=subprocess.PIPE, text=True)
        row = asyncio.run(burst(url, args.requests, args.tokens, prober))
        after, client_s = cpu_by_thread(server), time.process_time() - client_before
        spent = sorted(((after[t] - before.get(t, 0.0), t) for t in after), reverse=True)
        row |= {"server_cpu_s": round(sum(s for s, _ in spent), 2),
                "server_loop_thread_cpu_s": round(after.get(proc.pid, 0.0) - before.get(proc.pid, 0.0), 2),
                "server_top_threads_cpu_s": [round(s, 2) for s, _ in spent[:4]], "client_cpu_s": round(client_s, 2)}
    finally:
        stop_serve(proc)
    print(json.dumps({**row, "probe_in_client": args.probe_in_client, "profiled": bool(args.profile), "sampled": args.sample,
                      "cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}),
          flush=True)
    for line in log.read_text().splitlines():
        if line.startswith("LOOP LAG") or args.sample and line.startswith(("LOOP", "    ")):
                print(line)
    if args.profile and Path(args.profile).exists():
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
