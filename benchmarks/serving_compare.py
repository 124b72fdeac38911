"""VeloLLM vs llama.cpp's server on the same GGUF file, same workload, same run (CPU or GPU).

Writes a random-weight GGUF of a real shape (default: SmolLM2-135M's; `--quant` re-quantizes it with
llama.cpp's own quantizer), starts `velollm serve` and `python -m llama_cpp.server` on it, and runs
benchmarks/serving.py against each. llama-cpp-python's server decodes one request at a time (queued, with
`--interrupt_requests False`; its default cuts a streaming answer off when the next request arrives).

Usage: python benchmarks/serving_compare.py --num-prompts 16 --max-concurrency 8 --input-len 64 --output-len 32
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from gguf_load import quantize, write_f16  # noqa: E402

SMOLLM2_135M = dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152,
                    rope_theta=100000.0, context=8192)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def run_serving(label: str, url: str, model: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "serving.py"), "--base-url", f"{url}/v1", "--model", model, "--label", label,
           "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.max_concurrency),
           "--input-len", str(args.input_len), "--output-len", str(args.output_len)]
    # llama-cpp-python ignores vLLM's ignore_eos: banning EOS (id 2 in the written vocab) through logit_bias
    # gives both servers the same fixed output length.
    cmd += ["--no-ignore-eos", "--ban-token", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    print(out.stdout, flush=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"serving.py failed for {label}: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def serve(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ})
    try:
        wait_healthy(url, proc)
    except Exception:
        proc.kill()
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "velollm-serving-compare")
    p.add_argument("--quant", default="F16", help="F16 (as written) or a llama.cpp type such as Q8_0")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / "smollm2-135m-shape-F16.gguf"
    if not base.exists():
        write_f16(base, SMOLLM2_135M)
    path = base if args.quant == "F16" else args.out / f"smollm2-135m-shape-{args.quant}.gguf"
    if not path.exists():
        quantize(base, path, args.quant)

    results = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve([sys.executable, "-m", "velollm.cli", "serve", "--model", str(path), "--served-model-name", "bench",
                  "--port", str(port), "--max-model-len", "2048", "--kv-cache-memory", "1GiB"], url,
                 args.out / "velollm.log")
    try:
        results.append(run_serving("velollm", url, "bench", args))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve([sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", "bench",
                  "--port", str(port), "--n_ctx", "2048", "--n_threads", str(args.threads),
                  # by default a new request interrupts the one streaming; queue them instead
                  "--interrupt_requests", "False"], url,
                 args.out / "llama_cpp.log")
    try:
        results.append(run_serving("llama.cpp", url, "bench", args))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"\n=== serving on {path.name}: {args.num_prompts} prompts, concurrency {args.max_concurrency}, "
          f"~{args.input_len} words in, {args.output_len} tokens out ===")
    print(f"{'server':<12}{'out tok/s':>11}{'TTFT med ms':>13}{'TPOT med ms':>13}{'ITL med ms':>12}{'E2E med s':>11}")
    for r in results:
        print(f"{r['label']:<12}{r['output_tok_s']:>11.1f}{r['ttft_ms']['median']:>13.1f}{r['tpot_ms']['median']:>13.1f}"
              f"{r['itl_ms']['median']:>12.1f}{r['e2el_ms']['median'] / 1000:>11.2f}")


if __name__ == "__main__":
    main()
