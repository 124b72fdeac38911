"""Constrained-decoding overhead: N concurrent JSON-Schema (or forced tool-call) requests against the
same N requests unconstrained, in the same run, on any OpenAI-compatible server.

    python benchmarks/constrained.py                      # starts `velollm serve` (demo) itself
    python benchmarks/constrained.py --base-url http://127.0.0.1:8000 --model demo --mode tools

Each round sends the N constrained requests at once and records every answer's length, and the
same N prompts unconstrained with `max_tokens` = that length and `ignore_eos` (the order alternates
by round), so both batches do the same decode steps per request and only the grammar differs. Output
tok/s = completion tokens / wall time of the batch; the ratio is constrained / unconstrained
(target >= 0.90). The first round warms up (grammar compilation, caches) and is not counted; the
reported numbers are medians over --rounds. Prints a table and one JSON line ("what": "constrained").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
     "required": ["city", "unit"]},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 1000},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                               "maxItems": 4}}, "required": ["n", "tags"]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "who": {"type": "string", "format": "email"}}, "required": ["when", "who"]},
    {"type": "object", "properties": {"point": {"type": "object", "properties": {
        "x": {"type": "number", "minimum": -1, "maximum": 1}, "y": {"type": "number"}}, "required": ["x", "y"]},
        "label": {"type": "string"}}, "required": ["point"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "note": {"type": ["string", "null"]}},
     "required": ["ok", "note"]},
    {"type": "object", "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                         "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["id", "qty"]}}}, "required": ["items"]},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
                                      "score": {"type": "number"}}, "required": ["code"]},
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 8}]},
                                      "b": {"const": "fixed"}}, "required": ["a", "b"]},
]


def _body(args: argparse.Namespace, i: int, constrained: bool, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "max_tokens": max_tokens, "seed": i, "temperature": 1.0,
                            "messages": [{"role": "user", "content": f"Request {i}: fill in the form, please."}]}
    schema = SCHEMAS[i % len(SCHEMAS)]
    if args.mode == "tools":
        # The tools go into the prompt either way, so both batches read the same prompt.
        body["tools"] = [{"type": "function", "function": {"name": f"form_{i % len(SCHEMAS)}", "parameters": schema}}]
        body["tool_choice"] = "required" if constrained else "none"
    elif constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "form", "schema": schema}}
    if not constrained:
        body["ignore_eos"] = True  # exactly max_tokens: the constrained answer's length
    return body


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, str]:
    r = await client.post(f"{url}/v1/chat/completions", json=body)
    r.raise_for_status()
    data = r.json()
    return data["usage"]["completion_tokens"], data["choices"][0]["finish_reason"]


async def _batch(client: httpx.AsyncClient, url: str, bodies: list[dict[str, Any]]) -> tuple[float, list[int], list[str]]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_one(client, url, b) for b in bodies))
    elapsed = time.perf_counter() - t0
    return elapsed, [n for n, _ in results], [f for _, f in results]


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    n = args.num_requests
    rows = []
    async with httpx.AsyncClient(timeout=args.timeout, limits=httpx.Limits(max_connections=n + 8)) as client:
        lens: list[int] = []
        for round_ in range(args.rounds + 1):
            constrained = [_body(args, i, True, args.max_tokens) for i in range(n)]
            if round_ % 2 == 0:
                dt_c, lens, finishes = await _batch(client, url, constrained)
            # Odd rounds go unconstrained first (seeded answers repeat their lengths), so neither
            # batch always runs second on a warmer machine.
            dt_u, lens_u, _ = await _batch(client, url, [_body(args, i, False, max(1, k)) for i, k in enumerate(lens)])
            if round_ % 2 == 1:
                dt_c, lens, finishes = await _batch(client, url, constrained)
            row = {"round": round_, "constrained_s": dt_c, "unconstrained_s": dt_u, "tokens": sum(lens),
                   "tokens_unconstrained": sum(lens_u), "constrained_tok_s": sum(lens) / dt_c,
                   "unconstrained_tok_s": sum(lens_u) / dt_u,
                   "hit_max_tokens": sum(f == "length" for f in finishes)}
            row["ratio"] = row["constrained_tok_s"] / row["unconstrained_tok_s"]
            print(f"round {round_}{' (warm-up)' if round_ == 0 else ''}: constrained {row['constrained_tok_s']:8.1f} "
                  f"tok/s ({dt_c:.2f} s), unconstrained {row['unconstrained_tok_s']:8.1f} tok/s ({dt_u:.2f} s), "
                  f"ratio {row['ratio']:.3f}, {row['tokens']} tokens, {row['hit_max_tokens']} hit max_tokens",
                  flush=True)
            if round_:
                rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in ("constrained_tok_s", "unconstrained_tok_s", "ratio")}
    return {"what": "constrained", "mode": args.mode, "num_requests": n, "max_tokens": args.max_tokens,
            "rounds": args.rounds, **med, "target_ratio": 0.9, "rows": rows}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "velollm.cli", "serve", "--model", args.model, "--port", str(port),
           "--max-model-len", str(args.max_model_len), "--stats-interval", "0", *args.serve_args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(Path(tempfile.gettempdir()) / f"velollm-constrained-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"velollm serve exited with {proc.returncode}; log: {log.name}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"velollm serve did not become healthy; log: {log.name}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default=None, help="server root, e.g. http://127.0.0.1:8000 (default: start one)")
    p.add_argument("--model", default="demo")
    p.add_argument("--mode", choices=["json_schema", "tools"], default="json_schema",
                   help="response_format json_schema, or tools with tool_choice required (vs none)")
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--max-model-len", type=int, default=2048, help="for the server this script starts")
    p.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                   help="more `velollm serve` arguments for the server this script starts (last on the line)")
    args = p.parse_args()
    proc = None
    url = (args.base_url or "").rstrip("/").removesuffix("/v1")
    if not url:
        proc, url = start_server(args)
    try:
        result = asyncio.run(measure(args, url))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{'':16}{'tok/s':>10}\nconstrained     {result['constrained_tok_s']:10.1f}\n"
          f"unconstrained   {result['unconstrained_tok_s']:10.1f}\n"
          f"ratio           {result['ratio']:10.3f}   (target >= 0.90; median of {args.rounds} rounds)")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
