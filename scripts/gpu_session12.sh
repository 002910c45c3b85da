#!/usr/bin/env bash
# Session 12's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_before", ".bench_after"],
# each tree made by `git archive COMMIT tracer engines | tar -x -C DIR` (git-ignored), or for
# .bench_after a copy of the tree measured. The checkout's own tracer/ and engines/ are replaced by
# .bench_after's first, so what runs is exactly that tree. Session 12's trees:
#   git archive bdb3a42 tracer engines | tar -x -C .bench_before     # session 11, before the fused norm
#   git archive HEAD tracer engines | tar -x -C .bench_after         # the fused norm, BLOCK_ROWS = 1
#   git archive HEAD tracer engines | tar -x -C .bench_rows4 && \
#     sed -i 's/^BLOCK_ROWS = 1$/BLOCK_ROWS = 4/' .bench_rows4/engines/fused_norm.py
#   1. scripts/check_fused_norm.py: the fused add + RMSNorm kernel against the XLA form (time, error),
#      and the engine's logits and tokens with it against the XLA form;
#   2. scripts/bench_variants.py, 8B/1B pipeline, 64-token decode: before against after (and EXTRA, a
#      LABEL=TREE variant), round-robin (N, default 12);
#   3. engines.bench.spec and engines.bench.base against transformers (RUNS, default 5; gpu_perf.sh steps 2 and 1);
#   4. scripts/probe_decode_ops.py for the 8B and the 1B (device ops per decode step);
#   5. scripts/check_handover.py and check_decode_attention.py (kernels against references).
# STEPS picks steps (default "1 2").
set -euo pipefail
STEPS=${STEPS:-1 2}
rm -rf tracer engines && cp -r .bench_after/tracer .bench_after/engines .
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
1) python3 scripts/check_fused_norm.py 2>&1 | quiet | tee "$OUT/check_fused_norm.txt" ;;
2) python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-12}" --variant before=.bench_before \
       --variant after=. ${EXTRA:+--variant $EXTRA} --out "$OUT" 2>&1 | quiet | tee "$OUT/bench_variants_s12${TAG:-}.txt"
   mv "$OUT/bench_variants.json" "$OUT/bench_variants_s12${TAG:-}.json" ;;
3) STEPS="2 1" RUNS=${RUNS:-5} bash scripts/gpu_perf.sh ;;
4) for m in ${MODELS:-llama-3.1-8b llama-3.2-1b}; do
     PROBE_MODEL=$m PROBE_TOKENS=8 python3 scripts/probe_decode_ops.py 2>&1 | quiet | tee "$OUT/probe_decode_ops_$m.txt"
   done ;;
5) python3 scripts/check_handover.py 2>&1 | quiet | tee "$OUT/check_handover.txt"
   python3 scripts/check_decode_attention.py 2>&1 | quiet | tee "$OUT/check_decode_attention.txt" ;;
esac; done
