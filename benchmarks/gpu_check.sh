#!/usr/bin/env bash
# Issue 5 GPU check, one command on an H100/H200 with no network; installs nothing (torch, triton,
# transformers, pytest are there). Run from anywhere:   bash benchmarks/gpu_check.sh
#   1. kernel tests compiled for the GPU (TRITON_INTERPRET unset; the same tests CI runs interpreted)
#   2. kernel benchmarks: decode attention GB/s vs measured copy bandwidth, prefill attention TFLOP/s
#   3. end-to-end benchmarks (engine owners' scripts), then the table, last.
# Logs and results.jsonl go to $GPU_CHECK_DIR (default: $OUT/gpu_check if $OUT is set, else /tmp/gpu_check).
# Exit status 1 if any step failed or timed out. Step time limits keep the whole run under ~8 minutes.
set -u -o pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DIR=${GPU_CHECK_DIR:-${OUT:-/tmp}/gpu_check}
mkdir -p "$DIR"
RESULTS="$DIR/results.jsonl"
: > "$RESULTS"
STATUS=0
T0=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: run, tee its log, keep its JSON rows, record rc and seconds
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name: $*"
    start=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$DIR/$name.log"
    rc=${PIPESTATUS[0]}
    grep '^{"what"' "$DIR/$name.log" >> "$RESULTS"
    echo "{\"what\": \"step\", \"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start ))}" >> "$RESULTS"
    [ "$rc" -eq 0 ] || STATUS=1
}

$PY - <<'PY' | tee -a "$RESULTS"
import json, torch, triton, transformers
print(json.dumps({"what": "env", "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                  "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__}))
PY
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device"; exit 1; }

XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n 8)  # the many small kernel compiles run in parallel
step kernel_tests 180 $PY -m pytest tests/kernels -q -p no:cacheprovider "${XDIST[@]}" -rs
tail -n 1 "$DIR/kernel_tests.log" | $PY -c 'import json,sys; print(json.dumps({"what": "kernel_tests", "summary": sys.stdin.read().strip()}))' >> "$RESULTS"

step decode_attention 90 $PY benchmarks/decode_attention.py
step prefill_attention 60 $PY benchmarks/prefill_attention.py

# ===================== END-TO-END =====================
# CUDA-graph replay == eager; batch-1 decode vs roofline and transformers (static and dynamic cache);
# 256-request throughput vs transformers generate_batch and padded generate at batch 64 (fails unless the
# paged Triton kernels ran). Step limits are ceilings; a normal run stays well under them.
step engine_gpu_tests 90 $PY -m pytest tests/engine/test_cuda_graph.py -q -p no:cacheprovider -rs
step gpu_decode 300 $PY benchmarks/gpu_decode.py
for shape in llama-3.2-1b llama-3.1-8b; do
    step "throughput_$shape" 200 $PY benchmarks/throughput.py --device cuda --shape "$shape" \
        --num-requests 256 --min-prompt 64 --max-prompt 512 --output-len 128 --padded-batch 64
done
# =======================================================

echo "{\"what\": \"total\", \"seconds\": $(( $(date +%s) - T0 )), \"status\": $STATUS}" >> "$RESULTS"
$PY benchmarks/report_table.py "$RESULTS"
exit $STATUS
