#!/usr/bin/env bash
# Session 15's GPU runs (issue 19), results under $OUT; carry [".whl"] (with absl-py: the Mosaic
# GPU attention module imports jax's test utilities). The draft chunk's causal attention is about a
# third of its device time (cuDNN: 1.13 ms a layer in the profiled pipeline, ~420 TFLOP/s at head
# dim 64 on an H100); JAX ships a FlashAttention-3-style Hopper kernel. Session 15 ran step 1
# (docs/evidence/h100-session15/): cuDNN was faster on both shapes, casts included, so the
# engines keep cuDNN.
#   1. scripts/check_mgpu_attention.py: cuDNN against the Mosaic kernel's tilings, alone, on the
#      1B's and the 8B's heads at 10,752 rows (ATTN_SHAPES, ATTN_REPS, ATTN_ROWS);
#   2. engines.bench.spec and engines.bench.base against transformers (RUNS, default 5);
#   3. scripts/probe_decode_ops.py for the 1B's look-ahead step (8 tokens) and the 8B's decode
#      step, each XLA fusion with the JAX op path it came from (the dumped HLO's op_name): which
#      of a step's ~6 small XLA fusions a layer could go.
set -euo pipefail
STEPS=${STEPS:-1}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
1) timeout "${LIMIT:-300}" python3 scripts/check_mgpu_attention.py 2>&1 | quiet | tee "$OUT/check_mgpu_attention.txt" || true ;;
2) STEPS="2 1" RUNS=${RUNS:-5} bash scripts/gpu_perf.sh ;;
3) for m in llama-3.2-1b llama-3.1-8b; do
     PROBE_MODEL=$m PROBE_TOKENS=8 timeout 280 python3 scripts/probe_decode_ops.py 2>&1 | quiet \
       | tee "$OUT/probe_decode_ops_$m.txt" || true
   done ;;
esac; done
