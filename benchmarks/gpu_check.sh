#!/usr/bin/env bash
# GPU check (issues 5, 11, 17, 18), on an H100/H200 with no network; installs nothing (torch, triton,
# transformers, pytest are there). Run from anywhere:   bash benchmarks/gpu_check.sh
#
# The next GPU session (15 minutes of one H100 in all, machine start included; at most 10 minutes a call):
# two calls, the second at once after the first (the machine stays warm 30 s; a fresh one costs a start
# and rewrites the 16 GB 8B model folder), each with the packages the machine lacks carried along:
#   run(command="GPU_CHECK_STEPS=first GPU_CHECK_BUDGET=470 bash benchmarks/gpu_check.sh",
#       carry=[".gpu_deps"], timeout_s=500)
#   run(command="GPU_CHECK_STEPS=second GPU_CHECK_BUDGET=<budget_left_s - 70> bash benchmarks/gpu_check.sh",
#       carry=[".gpu_deps"], timeout_s=<GPU_CHECK_BUDGET + 25>)            (e.g. 230 / 255)
# .gpu_deps, made once here where pip works (pure-Python wheels; the GPU image has Python 3.12 and the rest):
#   pip install --target .gpu_deps --no-deps gguf==0.19.0 starlette==1.10.0 uvicorn==0.55.0 sniffio==1.3.1 json-repair==0.64.6
# (gguf: the quantized steps; starlette + uvicorn: `velollm serve` for the serving and context steps.)
# It is put on PYTHONPATH when present. Results come back under $OUT: results.jsonl and all.log.
#
# Groups (GPU_CHECK_STEPS: comma-separated group or step names; default all), in the order they run,
# with the expected seconds on an H100 (the limit in brackets; a step never runs past its limit):
#   first  (~470 s, limits sum past the budget: the last steps are skipped, and reported, if time runs out)
#     gpu_tests_engine    the CUDA engine and kernel tests (flash varlen prefill, async scheduling with decode
#                         graphs, fp8 KV cache: on by default or new, never run on a GPU before)       ~50  [90]
#     quant_decode_8b     issue 11: batch-1 decode 8B Q4_K_M quantized vs our bfloat16 path (the bf16
#                         side dequantizes 8B on the CPU at load: ~20 s)                              ~80  [110]
#     quant_decode_3b     issue 11: same, 3B Q4_K_M                                                   ~40  [70]
#     quant_decode_8b_q8  issue 11: same, 8B Q8_0                                                     ~70  [100]
#     throughput_llama-3.2-1b / _llama-3.1-8b  issue 18: 256 requests, async scheduling on and off    ~50/~100 [90/130]
#     gpu_decode          batch-1 decode vs the roofline (1B, 8B; 1B eager too; no transformers peer:
#                         its dynamic cache is host-bound, 13 tok/s, GPU_NOTES.md)                   ~45  [75]
#     prefill_attention   issue 18: paged prefill vs torch SDPA (flash), tile sweep; for prompts without a
#                         cached prefix a row per engine path (varlen = torch flash on the step's k/v, paged =
#                         our Triton kernel; $VELOLLM_PREFILL_ATTENTION) and the one "auto" takes      ~15  [45]
#     decode_fusions      issue 18: batch-1 decode fusions behind switches vs the default they would replace:
#                         split merge fused into decode attention ($VELOLLM_DECODE_FUSED_REDUCE=1), SiLU*mul
#                         fused into a Triton down-projection GEMV ($VELOLLM_SILU_DOWN_GEMV=1)       ~20  [45]
#   second (~210 s)
#     serving_8b          issue 18: velollm serve, 8B shape, ShareGPT-like, 1,000 prompts at rate inf and
#                         300 at 8/s (1,000 at 8/s is 125 s of arrivals alone), async on             ~120 [170]
#     context_cuda        issue 17: benchmarks/context.py --device cuda (30-turn TTFT, compression, switch) ~70 [110]
#     serving_8b_async_off, serving_1b   the same with async off (rate inf) and on the 1B shape      ~70/~90 [90/120]
#     context_cuda_8b     issue 17: the 30-turn TTFT and the engine floor on the 8B shape (bf16, all layers, the
#                         serving steps' folder): a real width, where the demo's 64-wide layers leave a GPU
#                         launch-bound; last, skipped when the budget is spent (GPU_CHECK_STEPS=context
#                         runs both context steps)                                                  ~90 [150]
#   base   gpu_tests, decode_attention, fp8_kv_cache (issue 11's fp8 KV cache: decode attention over bf16 vs fp8,
#          accuracy, 1B engine throughput with each), gpu_decode, the two throughput steps, prefill_attention,
#          decode_fusions, hf_static_cache
#   quant  the three quant_decode steps, quant_tests, quant_sweep, quant_throughput_8b, quant_load_8b
#   serving, context, tests: the steps so named; a step's own name also selects it
# GPU_CHECK_PEERS=1 adds transformers' generate_batch / padded generate to the throughput steps (~20 s 1B,
# ~75 s 8B; measured in GPU_NOTES.md run 1). SERVING_RATE_RUN (default 8:300) is the rate run of serving.
# Every step has a time limit, and the whole run stays inside GPU_CHECK_BUDGET seconds (default 420): a step
# that would start with less than 20 s left is skipped and reported. Then the table, last.
# Results: $GPU_CHECK_DIR/results.jsonl and all.log (default: $OUT if set, else /tmp/gpu_check).
# Exit status 1 if any step failed, timed out or was skipped.
set -u -o pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu_deps ] && export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_deps"
PY=${PYTHON:-python3}
DIR=${GPU_CHECK_DIR:-${OUT:-/tmp/gpu_check}}
BUDGET=${GPU_CHECK_BUDGET:-420}
STEPS=${GPU_CHECK_STEPS:-all}
mkdir -p "$DIR"
RESULTS="$DIR/results.jsonl"
LOG="$DIR/all.log"
: > "$RESULTS"
: > "$LOG"
STATUS=0
T0=$(date +%s)

want() {  # want NAME...: does GPU_CHECK_STEPS name one of these groups or steps (or is it all)?
    local name
    [ "$STEPS" = all ] && return 0
    for name in "$@"; do
        case ",$STEPS," in *",$name,"*) return 0 ;; esac
    done
    return 1
}

GROUPS_OF=""  # the groups of the steps that follow (set before each block)
step() {  # step NAME LIMIT_S COMMAND...: if wanted, run inside the budget, append its log, keep its JSON rows
    local name=$1 limit=$2 start rc left
    shift 2
    # shellcheck disable=SC2086
    want "$name" $GROUPS_OF || return 0
    left=$(( BUDGET - ($(date +%s) - T0) ))
    if [ "$left" -lt 20 ]; then
        echo "=== $name: skipped, ${left}s of the budget left" | tee -a "$LOG"
        echo "{\"what\": \"step\", \"step\": \"$name\", \"rc\": \"skipped\", \"seconds\": 0}" >> "$RESULTS"
        STATUS=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    start=$(date +%s)
    # GPU_CHECK_STEP_LIMIT: the step's own limit, for scripts that pace their parts (serving_velollm.py)
    timeout "$limit" env GPU_CHECK_STEP_LIMIT="$limit" "$@" > "$DIR/.step.log" 2>&1
    rc=$?
    cat "$DIR/.step.log" >> "$LOG"
    tail -n 25 "$DIR/.step.log"
    grep '^{"what"' "$DIR/.step.log" >> "$RESULTS"
    echo "{\"what\": \"step\", \"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start ))}" >> "$RESULTS"
    [ "$rc" -eq 0 ] || STATUS=1
}

$PY - <<'PY' | tee -a "$RESULTS"
import json, torch, triton, transformers
props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
print(json.dumps({"what": "env", "gpu": props.name if props else None,
                  "sms": props.multi_processor_count if props else None,
                  "memory_GiB": round(props.total_memory / 2**30, 1) if props else None,
                  "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__}))
PY
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device"; exit 1; }

XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n 8)  # the many small kernel compiles run in parallel
WORK=${GPU_CHECK_WORK:-/tmp/velollm-bench}  # model folders and GGUF files (8B bf16 16 GB, Q4_K_M 4.9 GB, Q8_0 8.5 GB)
PEERS=(--skip-peers)
[ "${GPU_CHECK_PEERS:-0}" = 1 ] && PEERS=()
summary() {  # summary WHAT: the pytest summary line of the last step as a JSON row
    grep -E "passed|failed" "$DIR/.step.log" | tail -n 1 | \
        $PY -c "import json,sys; print(json.dumps({'what': '$1', 'summary': sys.stdin.read().strip()}))" >> "$RESULTS"
}

# --- first call: issue 11's decode targets, issue 18's throughput, batch-1 decode, prefill attention ---
# Before any figure: the paths that are on by default on CUDA but never ran on a GPU yet (flash varlen
# prefill, async scheduling's device-side fill into decode graphs, the fp8 KV cache) against their references.
GROUPS_OF="first"
step gpu_tests_engine 90 $PY -m pytest tests/engine/test_cuda_graph.py tests/engine/test_models_gpu.py \
    tests/kernels/test_kernels_gpu.py -q -p no:cacheprovider "${XDIST[@]}" -rs
want gpu_tests_engine first && summary gpu_tests_engine
GROUPS_OF="first quant"
step quant_decode_8b 110 $PY benchmarks/gguf_quantized.py --steps decode --workdir "$WORK" --case llama-3.1-8b:Q4_K_M
step quant_decode_3b 70 $PY benchmarks/gguf_quantized.py --steps decode --workdir "$WORK" --case llama-3.2-3b:Q4_K_M
step quant_decode_8b_q8 100 $PY benchmarks/gguf_quantized.py --steps decode --workdir "$WORK" --case llama-3.1-8b:Q8_0
GROUPS_OF="first base throughput"
step throughput_llama-3.2-1b 90 $PY benchmarks/throughput.py --device cuda --shape llama-3.2-1b --workdir "$WORK" \
    --num-requests 256 --min-prompt 64 --max-prompt 512 --output-len 128 --padded-batch 64 \
    --async-scheduling both "${PEERS[@]}"
step throughput_llama-3.1-8b 130 $PY benchmarks/throughput.py --device cuda --shape llama-3.1-8b --workdir "$WORK" \
    --num-requests 256 --min-prompt 64 --max-prompt 512 --output-len 128 --padded-batch 64 \
    --async-scheduling both "${PEERS[@]}"
GROUPS_OF="first base"
step gpu_decode 75 $PY benchmarks/gpu_decode.py --workdir "$WORK" --peers none
step prefill_attention 45 $PY benchmarks/prefill_attention.py
step decode_fusions 45 $PY benchmarks/decode_fusions.py

# --- second call: issue 18's serving run, issue 17's context run ---
RATE_RUN=${SERVING_RATE_RUN:-8:300}
GROUPS_OF="second serving"
step serving_8b 170 $PY benchmarks/serving_velollm.py --shape llama-3.1-8b --workdir "$WORK" --async on \
    --run inf:1000 --run "$RATE_RUN"
GROUPS_OF="second context"
step context_cuda 110 $PY benchmarks/context.py --device cuda --switches 3
GROUPS_OF="second serving"
step serving_8b_async_off 90 $PY benchmarks/serving_velollm.py --shape llama-3.1-8b --workdir "$WORK" --async off \
    --run inf:1000
step serving_1b 120 $PY benchmarks/serving_velollm.py --shape llama-3.2-1b --workdir "$WORK" --async on \
    --run inf:1000 --run "$RATE_RUN"
GROUPS_OF="second context"
step context_cuda_8b 150 $PY benchmarks/context.py --device cuda --shape llama-3.1-8b --workdir "$WORK" \
    --parts ttft,floor

# --- longer sessions: correctness on the GPU, the rest of issues 5 and 11 ---
GROUPS_OF="base tests"
step gpu_tests 150 $PY -m pytest tests/kernels tests/engine/test_cuda_graph.py tests/engine/test_models_gpu.py \
    -q -p no:cacheprovider "${XDIST[@]}" -rs
want gpu_tests base tests && summary gpu_tests
GROUPS_OF="base"
step decode_attention 75 $PY benchmarks/decode_attention.py
step fp8_kv_cache 120 $PY benchmarks/fp8_kv_cache.py --engine --workdir "$WORK"
GROUPS_OF="quant tests"
step quant_tests 120 $PY -m pytest tests/kernels/test_quant_kernels.py tests/gguf/test_gguf_quantized_gpu.py \
    -q -p no:cacheprovider "${XDIST[@]}" -rs
want quant_tests quant tests && summary quant_tests
GROUPS_OF="quant"
step quant_sweep 90 $PY benchmarks/quant_matmul.py --types Q4_K Q6_K Q8_0
step quant_throughput_8b 150 $PY benchmarks/gguf_quantized.py --steps throughput --workdir "$WORK" \
    --case llama-3.1-8b:Q4_K_M
step quant_load_8b 90 $PY benchmarks/gguf_load.py --out "$WORK" --shape llama-3.1-8b --types Q4_K_M \
    --device cuda --quantization gguf
GROUPS_OF="base"
step hf_static_cache 240 $PY benchmarks/gpu_decode.py --workdir "$WORK" --skip-velollm --peers static

echo "{\"what\": \"total\", \"seconds\": $(( $(date +%s) - T0 )), \"status\": $STATUS}" >> "$RESULTS"
$PY benchmarks/report_table.py "$RESULTS" | tee -a "$LOG"
exit $STATUS
