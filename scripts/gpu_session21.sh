#!/usr/bin/env bash
# Session 21's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_s11"] where .bench_s11 is
# session 11's final tree (`git archive 85c8544 tracer engines | tar -x -C .bench_s11`), the last one
# measured on an H200 before session 20 found the full prefill 4% slower there.
#   v. bench_variants, n=$RUNS (default 8), 64 tokens decoded: this tree; this tree with tokenizers
#      instead of tiktoken (session 23: the `tokenize[spec]` row of the timeline); on an H200 only
#      (four workers need its memory), session 11's tree and this tree with the base's chunk
#      programs without CUDA graphs (session 18 turned them back on, measured on an H100 only), the
#      `full prefill` row answers the 4%; and SwiGLU in the gate/up GEMM's epilogue for both engines
#      (engines.swiglu_gemm, $SPECTRACE_MLP_EPILOGUE), only after step w found the kernel right
#      (or with EPILOGUE=1);
#   1. the targets: engines.bench.spec (device scoring, n=$RUNS_SPEC, default 8) and engines.bench.base
#      (n=$RUNS_SPEC) against transformers, and scripts/check_handover.py (gpu_session18.sh step 1's first half);
#   t. scripts/probe_tokenize.py (back to back and after 50 ms idle);
#   w. scripts/probe_swiglu_gemm.py: SwiGLU in the gate/up GEMM's epilogue (Mosaic GPU) against XLA's GEMM + multiply.
set -euo pipefail
STEPS=${STEPS:-"v"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
BASE_XLA="base:xla_gpu_enable_triton_gemm=false"  # the base's default (engines.host.GPU_BASE_CHUNK_XLA)
for step in $STEPS; do case $step in
v) # session 11's tree writes its own (older) embedded tokenizer: its own checkpoint cache, not this tree's
   S11=(--variant s11=.bench_s11,SPECTRACE_CACHE_DIR=/tmp/cache_s11
        --variant base_nocb=.,SPECTRACE_CHUNK_XLA="$BASE_XLA;base:xla_gpu_enable_command_buffer=")
   grep -q H200 "$OUT/gpu.txt" || S11=()  # four 8B + 1B workers need an H200's memory (an H100 holds two)
   # The kernel joins only once step w saw it compile, run and match (an error under 0.01 of the
   # output's max): a worker that hangs would cost the other variants their figures.
   EPI=(--variant epilogue=.,SPECTRACE_MLP_EPILOGUE=spec,base)
   grep -q "^  fused (.*err 0\.00" "$OUT/probe_swiglu_gemm.txt" 2>/dev/null || [ "${EPILOGUE:-}" = 1 ] || EPI=()
   timeout "${V_TIMEOUT:-370}" python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-8}" --gen-len 64 --out "$OUT" \
     --variant now=. --variant tok_hf=.,SPECTRACE_TIKTOKEN=0 "${S11[@]}" "${EPI[@]}" 2>&1 \
     | quiet | tee "$OUT/bench_variants_s11.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_s11.json" 2>/dev/null || true ;;
1) timeout 150 python3 scripts/check_handover.py 2>&1 | quiet | tee "$OUT/check_handover.txt" || true
   timeout 240 python3 -m spectrace.engines.bench.spec "${PAIR[@]}" --keep 0.10 --modes device -n "${RUNS_SPEC:-8}" \
     --out "$OUT/bench_spec.json" 2>&1 | quiet | tee "$OUT/bench_spec.txt" || true
   timeout 200 python3 -m spectrace.engines.bench.base --preset llama-3.1-8b --prompt-len 10741 \
     --prefill-seq-len 16384 --gen 64 --runs "${RUNS_SPEC:-8}" 2>&1 | quiet | tee "$OUT/bench_base_8b.txt" || true ;;
t) timeout 100 python3 scripts/probe_tokenize.py 2>&1 | quiet | tee "$OUT/probe_tokenize.txt" || true ;;
w) timeout 150 python3 scripts/probe_swiglu_gemm.py 2>&1 | quiet | tee "$OUT/probe_swiglu_gemm.txt" || true ;;
*) echo "gpu_session21.sh: no step '$step' (steps: v, 1, t, w)" >&2; exit 2 ;;
esac; done
