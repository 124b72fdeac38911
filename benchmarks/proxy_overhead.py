"""Proxy overhead: the same OpenAI workload sent to an upstream directly, through a bare Starlette + httpx
pass-through (the floor of this stack), and through VeloLLM's proxy path, interleaved in one run.

    python benchmarks/proxy_overhead.py [--requests 200] [--streams 64] [--seconds 4] [--loops asyncio,uvloop]
    python benchmarks/proxy_overhead.py --velollm-url http://127.0.0.1:8000   # a running `velollm serve --proxy-only`

Paths: direct; floor (bare Starlette + httpx pass-through); velollm (the proxy path alone: route +
forward); velollm-api (the whole API app with middleware and validation, no native model);
velollm-router (velollm-api with the router of `--config` and one backend: issue 16's router path,
target < 0.3 ms p50 over velollm-api). `--paths` picks the rows.
Reports, per event loop: added latency per request and per first token (p50, p99) over direct,
chunks/s at N concurrent streams, and the serving process's CPU time per relayed chunk (the steadiest
number on a shared machine). Targets (issue 6): added p50 within 0.3 ms of the floor, p99 < 5 ms,
>= 95 % of direct throughput at 64 streams. Each server is its own process; on a 2-core machine the
client, the proxy and the upstream share the cores, so compare the rows of one run, not across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

CHAT = {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


# --- servers (each runs in its own process: `--role NAME`) -------------------------------------


def upstream_app(tokens: int, token_delay: float) -> Any:
    """A fake OpenAI server: constant small answers, `tokens` SSE chunks `token_delay` s apart."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    whole = {"id": "x", "object": "chat.completion", "created": 0, "model": "bench",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " * tokens},
                          "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": tokens,
                                                             "total_tokens": tokens + 1}}
    chunk = b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"bench","choices":[{"index":0,"delta":{"content":"hi "},"finish_reason":null}]}\n\n'

    async def chat(request: Any) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(whole)

        async def events() -> Any:
            for _ in range(int(body.get("max_tokens") or tokens)):
                if token_delay:
                    await asyncio.sleep(token_delay)
                yield chunk
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def version(request: Any) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def models(request: Any) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/api/version", version), Route("/v1/models", models)])


def floor_app(upstream: str) -> Any:
    """The floor: a bare Starlette + httpx pass-through in a few lines."""
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=upstream, timeout=None, limits=httpx.Limits(max_connections=1000))

    async def chat(request: Any) -> Response:
        response = await client.send(client.build_request("POST", "/v1/chat/completions", content=await request.body(),
                                                          headers={"content-type": "application/json"}), stream=True)

        async def body() -> Any:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(body(), status_code=response.status_code,
                                 media_type=response.headers.get("content-type"))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def velollm_app(upstream: str) -> Any:
    """VeloLLM's proxy path as the API app calls it: parse, route by model name, forward."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from velollm.proxy.gateway import UpstreamGateway
    from velollm.proxy.upstream import UpstreamConfig

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state["gateway"] = gateway = UpstreamGateway(UpstreamConfig(url=upstream))
        await gateway.upstream.list_models()
        yield
        await gateway.aclose()

    async def chat(request: Any) -> Response:
        body = await request.json()
        gateway = state["gateway"]
        return await gateway.forward(request, body, await gateway.find(body["model"]))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


def velollm_api_app(upstream: str) -> Any:
    """The whole VeloLLM API app (middleware, validation, registry) with no native model: what
    `velollm serve --proxy-only` runs."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.proxy.gateway import UpstreamGateway
    from velollm.proxy.upstream import UpstreamConfig

    return create_app(ServerConfig(stats_interval_s=0), engines={},
                      upstream=UpstreamGateway(UpstreamConfig(url=upstream), proxy_only=True))


def velollm_router_app(upstream: str) -> Any:
    """The whole API app with the router (velollm/router, `velollm serve --config`) in front of one backend:
    the router path, compared with velollm-api (the single-upstream proxy path)."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.router.config import parse_config
    from velollm.router.router import Router

    routing = parse_config({"backends": [{"name": "b0", "url": upstream, "kind": "openai"}]})
    return create_app(ServerConfig(models=(), proxy_only=True, stats_interval_s=0, config_file=routing), engines={},
                      upstream=Router(routing))


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    if args.role == "upstream":
        app = upstream_app(args.tokens, args.token_delay)
    elif args.role == "floor":
        app = floor_app(args.upstream)
    elif args.role == "velollm-api":
        app = velollm_api_app(args.upstream)
    elif args.role == "velollm-router":
        app = velollm_router_app(args.upstream)
    else:
        app = velollm_app(args.upstream)
    fast = args.loop == "uvloop"
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False,
                loop="uvloop" if fast else "asyncio", http="httptools" if fast else "h11")


# --- client -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(role: str, port: int, args: argparse.Namespace, upstream: str = "") -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--role", role, "--port", str(port), "--loop", args.loop_now,
           "--tokens", str(args.tokens), "--token-delay", str(args.token_delay), "--upstream", upstream]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, env=env)


async def wait_ready(client: Any, url: str) -> None:
    import httpx

    for _ in range(300):
        try:
            await client.post(url + "/v1/chat/completions", json=CHAT)
            return
        except httpx.TransportError:  # not listening yet
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


async def one_request(client: Any, url: str) -> float:
    started = time.perf_counter()
    response = await client.post(url + "/v1/chat/completions", json=CHAT)
    response.raise_for_status()
    return time.perf_counter() - started


async def first_token(client: Any, url: str) -> float:
    started = time.perf_counter()
    request = {**CHAT, "stream": True, "max_tokens": 2}
    async with client.stream("POST", url + "/v1/chat/completions", json=request) as response:
        chunks = response.aiter_raw()
        await anext(chunks)
        elapsed = time.perf_counter() - started
        async for _ in chunks:
            pass
    return elapsed


async def stream_throughput(url: str, streams: int, seconds: float, tokens: int) -> tuple[float, int]:
    """Chunks per second received over `streams` concurrent streaming requests, back to back.

    A raw HTTP/1.1 client that only counts events: httpx parsing 64 streams would make the client the
    bottleneck on a small machine, and the comparison would measure the client.
    """
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({**CHAT, "stream": True, "max_tokens": tokens}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    deadline = time.perf_counter() + seconds
    counts = [0] * streams

    async def worker(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                tail = b""
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("server closed the connection")
                    window = tail + data
                    counts[i] += window.count(b"data: {") - tail.count(b"data: {")
                    if window.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of a chunked response
                        break
                    tail = window[-16:]
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(streams)))
    return sum(counts) / (time.perf_counter() - started), sum(counts)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1e3


async def measure(targets: dict[str, str], pids: dict[str, int], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    import httpx
    import psutil

    results: dict[str, dict[str, Any]] = {name: {"latency": [], "ttft": [], "tput": [], "cpu_us": []}
                                          for name in targets}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1000)) as client:
        for url in targets.values():
            await wait_ready(client, url)
        for _ in range(20):  # warm up connections and code paths
            for url in targets.values():
                await one_request(client, url)
                await first_token(client, url)
        names = list(targets)
        for _ in range(args.requests):
            random.shuffle(names)  # interleaved: drift on the machine hits every target alike
            for name in names:
                results[name]["latency"].append(await one_request(client, targets[name]))
                results[name]["ttft"].append(await first_token(client, targets[name]))
        for _ in range(2):
            for name in targets:
                # CPU time of the serving process per relayed chunk: unlike rates, it hardly moves
                # with other load on the machine. For "direct" it is the upstream's own cost.
                process = psutil.Process(pids[name]) if name in pids else None
                before = sum(process.cpu_times()[:2]) if process else 0.0
                rate, chunks = await stream_throughput(targets[name], args.streams, args.seconds, args.tokens)
                results[name]["tput"].append(rate)
                if process:
                    results[name]["cpu_us"].append((sum(process.cpu_times()[:2]) - before) / max(chunks, 1) * 1e6)
    return results


def report(loop: str, results: dict[str, dict[str, Any]], streams: int) -> None:
    direct = results["direct"]
    print(f"\n== {loop} ==  (ms; added = over direct at the same percentile)")
    print(f"{'path':12} {'req p50':>8} {'req p99':>8} {'add p50':>8} {'add p99':>8} {'ttft p50':>9} {'add p50':>8}"
          f" {'add p99':>8} {'chunks/s@' + str(streams):>14} {'vs direct':>9} {'cpu us/chunk':>12}")
    for name, r in results.items():
        tput = statistics.mean(r["tput"])
        print(f"{name:12} {pct(r['latency'], .5):8.3f} {pct(r['latency'], .99):8.3f}"
              f" {pct(r['latency'], .5) - pct(direct['latency'], .5):8.3f}"
              f" {pct(r['latency'], .99) - pct(direct['latency'], .99):8.3f}"
              f" {pct(r['ttft'], .5):9.3f} {pct(r['ttft'], .5) - pct(direct['ttft'], .5):8.3f}"
              f" {pct(r['ttft'], .99) - pct(direct['ttft'], .99):8.3f}"
              f" {tput:14.0f} {tput / statistics.mean(direct['tput']):9.1%}"
              f" {statistics.mean(r['cpu_us']) if r['cpu_us'] else float('nan'):12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["upstream", "floor", "velollm", "velollm-api", "velollm-router"])
    parser.add_argument("--paths", default="floor,velollm,velollm-api,velollm-router",
                        help="paths compared with direct (velollm-router: the API app with the router of --config)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--loops", default="asyncio,uvloop", help="event loops to compare (uvloop needs uvloop+httptools)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--token-delay", type=float, default=0.05, help="seconds between upstream chunks")
    parser.add_argument("--velollm-url", help="measure a running `velollm serve --proxy-only` instead")
    args = parser.parse_args()
    if args.role:
        serve(args)
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other load skews every row)")
    for loop in args.loops.split(","):
        if loop == "uvloop":
            try:
                import httptools  # noqa: F401
                import uvloop  # noqa: F401
            except ImportError:
                print("uvloop/httptools not installed: skipping that row")
                continue
        args.loop_now = loop
        paths = ["direct", *[p for p in args.paths.split(",") if p and p != "direct"]]
        ports = {name: free_port() for name in paths}
        upstream = f"http://127.0.0.1:{ports['direct']}"
        processes = {"direct": spawn("upstream", ports["direct"], args)}
        for name in paths[1:]:
            if not (name == "velollm-api" and args.velollm_url):
                processes[name] = spawn(name, ports[name], args, upstream)
        targets = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        if args.velollm_url:
            targets["velollm-api"] = args.velollm_url
        try:
            pids = {name: p.pid for name, p in processes.items()}
            results = asyncio.run(measure(targets, pids, args))
        finally:
            for process in processes.values():
                process.terminate()
                process.wait()
        report(loop, results, args.streams)
        print(f"load average: {os.getloadavg()[0]:.2f}")
        print(json.dumps({"loop": loop, **{name: {"p50_ms": pct(r["latency"], .5), "p99_ms": pct(r["latency"], .99),
                                                  "ttft_p50_ms": pct(r["ttft"], .5),
                                                  "chunks_per_s": statistics.mean(r["tput"]),
                                                  "cpu_us_per_chunk": statistics.mean(r["cpu_us"]) if r["cpu_us"] else None}
                                           for name, r in results.items()}}))


if __name__ == "__main__":
    main()
