#!/usr/bin/env bash
# Issue 5 GPU check, one command on an H100/H200 with no network; installs nothing (torch, triton,
# transformers, pytest are there). Run from anywhere:   bash benchmarks/gpu_check.sh
#   1. GPU tests: every kernel compiled for the GPU (TRITON_INTERPRET unset; the tests CI runs interpreted),
#      CUDA-graph replay == eager, the whole engine on CUDA against transformers
#   2. decode attention alone: GB/s against the measured copy bandwidth, with a small tiling sweep
#   3. batch-1 decode vs roofline and transformers; 256-request throughput vs transformers' generate_batch
#      and padded generate (fails unless the paged Triton kernels ran); prefill attention TFLOP/s, and for
#      prompts without a cached prefix one row per engine path (varlen = torch flash on the step's k/v,
#      paged = our Triton kernel; $VELOLLM_PREFILL_ATTENTION) with the one "auto" takes
#   4. transformers' static-cache decode (it compiles: minutes), only if the time budget allows
#   5. GGUF kept quantized (issue 11): quantized kernel tests, the GEMV/GEMM sweep behind the dispatch rule,
#      batch-1 decode and 64/256-request throughput quantized vs our bfloat16 path (+ llama.cpp when its build
#      offloads), load time / RSS / VRAM of an 8B Q4_K_M file vs llama.cpp
#   GPU_CHECK_STEPS=quant runs only step 5 (GPU_CHECK_BUDGET=540 fits one 10-minute call);
#   GPU_CHECK_STEPS=base only steps 1-4; default: all
# then the table, last. Every step has a time limit, and the whole run stays inside GPU_CHECK_BUDGET
# seconds (default 420): a step that would start with less than 20 s left is skipped and reported.
# Results: $GPU_CHECK_DIR/results.jsonl and all.log (default: $OUT if set, else /tmp/gpu_check).
# Exit status 1 if any step failed, timed out or was skipped.
# Packages the GPU machine lacks (it has no network; `gguf` for step 5) go in .gpu_deps, made where pip
# works (`pip install --target .gpu_deps --no-deps gguf`) and carried along with the tree: it is put on
# PYTHONPATH when present.
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

step() {  # step NAME LIMIT_S COMMAND...: run inside the budget, append its log, keep its JSON rows
    local name=$1 limit=$2 start rc left
    shift 2
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
    timeout "$limit" "$@" > "$DIR/.step.log" 2>&1
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
if [ "$STEPS" != quant ]; then
step gpu_tests 150 $PY -m pytest tests/kernels tests/engine/test_cuda_graph.py tests/engine/test_models_gpu.py \
    -q -p no:cacheprovider "${XDIST[@]}" -rs
grep -E "passed|failed" "$DIR/.step.log" | tail -n 1 | \
    $PY -c 'import json,sys; print(json.dumps({"what": "gpu_tests", "summary": sys.stdin.read().strip()}))' >> "$RESULTS"

step decode_attention 75 $PY benchmarks/decode_attention.py
step gpu_decode 150 $PY benchmarks/gpu_decode.py
for shape in llama-3.2-1b llama-3.1-8b; do
    step "throughput_$shape" 150 $PY benchmarks/throughput.py --device cuda --shape "$shape" \
        --num-requests 256 --min-prompt 64 --max-prompt 512 --output-len 128 --padded-batch 64
done
step prefill_attention 45 $PY benchmarks/prefill_attention.py
step hf_static_cache 240 $PY benchmarks/gpu_decode.py --skip-velollm --peers static
fi

if [ "$STEPS" != base ]; then
WORK=${GPU_CHECK_WORK:-/tmp/velollm-bench}  # the GGUF files (4.9 GB 8B Q4_K_M, 8.5 GB 8B Q8_0, 2 GB 3B)
step quant_tests 120 $PY -m pytest tests/kernels/test_quant_kernels.py tests/gguf/test_gguf_quantized_gpu.py \
    -q -p no:cacheprovider "${XDIST[@]}" -rs
grep -E "passed|failed" "$DIR/.step.log" | tail -n 1 | \
    $PY -c 'import json,sys; print(json.dumps({"what": "quant_tests", "summary": sys.stdin.read().strip()}))' >> "$RESULTS"
step quant_decode_8b 150 $PY benchmarks/gguf_quantized.py --steps decode --workdir "$WORK" \
    --case llama-3.1-8b:Q4_K_M --case llama-3.1-8b:Q8_0
step quant_sweep 90 $PY benchmarks/quant_matmul.py --types Q4_K Q6_K Q8_0
step quant_throughput_8b 150 $PY benchmarks/gguf_quantized.py --steps throughput --workdir "$WORK" \
    --case llama-3.1-8b:Q4_K_M
step quant_decode_3b 75 $PY benchmarks/gguf_quantized.py --steps decode --workdir "$WORK" --case llama-3.2-3b:Q4_K_M
step quant_load_8b 90 $PY benchmarks/gguf_load.py --out "$WORK" --shape llama-3.1-8b --types Q4_K_M \
    --device cuda --quantization gguf
fi

echo "{\"what\": \"total\", \"seconds\": $(( $(date +%s) - T0 )), \"status\": $STATUS}" >> "$RESULTS"
$PY benchmarks/report_table.py "$RESULTS" | tee -a "$LOG"
exit $STATUS
