"""Issue 18's serving run: `velollm serve` on a random-weight model shape, benchmarks/serving.py against it.

    python benchmarks/serving_velollm.py --shape llama-3.1-8b --run inf:1000 --run 8:400 --async both
    python benchmarks/serving_velollm.py --shape smollm2-135m --device cpu --run inf:20 --run 8:20 \
        --max-input 64 --max-output 16 --async both              # CPU dry run (~1 min)

The model folder is benchmarks/shapes.py's (random weights, a tokenizer that decodes every id; written once
under --workdir, reused by throughput.py). Per asynchronous-scheduling setting (async_toggle.py: `on`, `off`
or `both`; one server labelled async=unsupported where `velollm serve` has no such flag) one server starts;
against it each --run RATE:PROMPTS is one serving.py run with --dataset sharegpt-like (ShareGPT-like
lengths, token-id prompts on the completions endpoint, ignore_eos + min_tokens so every answer has its drawn
length, the single-request TPOT first; run k uses seed k, so no run hits another's prefix cache and every
server sees the same requests). Prints serving.py's table per run and one compact JSON row per run
("what": "serving_run") with output tok/s, TTFT and TPOT p50/p99 and TPOT p99 / single-request TPOT
(target <= 2). --time-limit (gpu_check.sh's step limit) skips the runs it would cut: a run needs
--min-seconds-left plus its arrivals' PROMPTS / RATE seconds; each skip is a row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from async_toggle import CHOICES, UNSUPPORTED, serve_settings  # noqa: E402
from bench_util import emit  # noqa: E402
from shapes import SHAPES, save_random_model  # noqa: E402

from tests.serve_process import start_serve, stop_serve  # noqa: E402


def parse_run(text: str) -> tuple[float, int]:
    rate, _, prompts = text.partition(":")
    return (math.inf if rate == "inf" else float(rate)), int(prompts)


def compact(shape: str, label: str, row: dict) -> dict:
    """The figures issue 18 asks for, from serving.py's JSON row."""
    r2 = lambda x: None if x is None else round(x, 2)  # noqa: E731
    return dict(shape=shape, **{"async": label}, rate=row["request_rate"], prompts=row["num_prompts"],
                completed=row["completed"], failed=row["failed"], duration_s=r2(row["duration_s"]),
                input_tokens=row["total_input_tokens"], output_tokens=row["total_output_tokens"],
                output_tok_s=round(row["output_tok_s"], 1), total_tok_s=round(row["total_tok_s"], 1),
                ttft_p50_ms=r2(row["ttft_ms"]["median"]), ttft_p99_ms=r2(row["ttft_ms"]["p99"]),
                tpot_p50_ms=r2(row["tpot_ms"]["median"]), tpot_p99_ms=r2(row["tpot_ms"]["p99"]),
                single_tpot_ms=r2(row["single_tpot_ms"]), tpot_p99_over_single=r2(row["tpot_p99_over_single"]),
                target=row["batching_target"], met=row["batching_met"], short_outputs=row["short_outputs"])


def serving_run(url: str, model: str, rate: float, prompts: int, seed: int, args: argparse.Namespace,
                timeout: float | None) -> tuple[int, dict | None]:
    cmd = [sys.executable, str(HERE / "serving.py"), "--base-url", f"{url}/v1", "--model", model,
           "--dataset", "sharegpt-like", "--num-prompts", str(prompts), "--request-rate", str(rate),
           "--seed", str(seed), "--max-model-len", str(args.max_model_len), "--max-input", str(args.max_input),
           "--single-requests", str(args.single_requests), "--label", model]
    if args.max_output:
        cmd += ["--max-output", str(args.max_output)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        print((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        return 124, None
    row = None
    for line in out.stdout.splitlines():
        if line.startswith('{"what": "serving"'):
            row = json.loads(line)
            print(f"serving.py row: {line}")  # kept in the log; the compact row goes to the results
        else:
            print(line)
    print(out.stderr[-2000:], end="", file=sys.stderr)
    return out.returncode, row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--run", action="append", default=None, metavar="RATE:PROMPTS",
                   help="request rate (inf or requests/s) and prompts, repeatable (default: inf:1000 and 8:1000)")
    p.add_argument("--async", dest="async_choice", choices=CHOICES, default="both")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-input", type=int, default=1024)
    p.add_argument("--max-output", type=int, default=None)
    p.add_argument("--single-requests", type=int, default=3)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench")
    p.add_argument("--time-limit", type=float, default=float(os.environ.get("GPU_CHECK_STEP_LIMIT", "inf")) - 5,
                   help="seconds this script may take (default: gpu_check.sh's step limit - 5 s): a run is "
                        "skipped (and reported) when less than --min-seconds-left would remain for it")
    p.add_argument("--min-seconds-left", type=float, default=30.0,
                   help="seconds a run needs besides its arrivals (PROMPTS / RATE)")
    args = p.parse_args()
    started = time.perf_counter()
    # A step limit's SIGTERM ends the script through its finally blocks: the server goes down with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = [parse_run(r) for r in (args.run or ["inf:1000", "8:1000"])]

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    folder = save_random_model(args.shape, args.workdir / f"{args.shape}-{dtype}", getattr(torch, dtype))
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    emit(what="serving_setup", shape=args.shape, device=args.device, hardware=hardware, dtype=dtype,
         max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
         runs=[f"{rate}:{n}" for rate, n in runs], model_seconds=round(time.perf_counter() - started, 1))
    status = 0
    settings = serve_settings(args.async_choice)
    if args.async_choice == "off" and settings[0][0] == UNSUPPORTED:
        emit(what="serving_run", shape=args.shape, **{"async": UNSUPPORTED},
             skipped="velollm serve has no --async-scheduling: the async=off run would repeat the other")
        return 0
    for label, flags in settings:
        left = args.time_limit - (time.perf_counter() - started)
        if left < args.min_seconds_left:
            emit(what="serving_run", shape=args.shape, **{"async": label}, skipped=f"{left:.0f} s left")
            status = 1
            continue
        extra = ["--kv-cache-memory", "2GiB"] if args.device == "cpu" else []
        t0 = time.perf_counter()
        proc, url, log, _ = start_serve(Path(tempfile.mkdtemp()), "--model", str(folder), "--served-model-name",
                                        args.shape, "--device", args.device, "--dtype", dtype, "--max-model-len",
                                        str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
                                        # every prompt of a rate-inf run waits in the queue at once (default 512)
                                        "--max-queue", str(max(n for _, n in runs) + 64),
                                        "--no-upstream", *extra, *flags, timeout=max(60.0, left - 10))
        emit(what="serving_server", shape=args.shape, **{"async": label}, flags=" ".join(flags) or "-",
             start_s=round(time.perf_counter() - t0, 1))
        try:
            for seed, (rate, prompts) in enumerate(runs):
                left = args.time_limit - (time.perf_counter() - started)
                if left < args.min_seconds_left + (0 if math.isinf(rate) else prompts / rate):  # + the arrivals
                    emit(what="serving_run", shape=args.shape, **{"async": label}, rate=str(rate), prompts=prompts,
                         skipped=f"{left:.0f} s left")
                    status = 1
                    continue
                print(f"\n=== {args.shape} async={label} rate={rate} prompts={prompts} ({hardware})", flush=True)
                rc, row = serving_run(url, args.shape, rate, prompts, seed, args,
                                      timeout=None if math.isinf(left) else left - 5)
                if row is None:
                    emit(what="serving_run", shape=args.shape, **{"async": label}, rate=str(rate), prompts=prompts,
                         error=f"serving.py exit {rc}")
                else:
                    emit(what="serving_run", **compact(args.shape, label, row))
                status = status or (1 if rc else 0)
        finally:
            stop_serve(proc)
            if status:
                print(log.read_text()[-2000:], file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
