#!/usr/bin/env bash
# Session 13's GPU runs (issue 19), results under $OUT; carry [".whl"]. The decode-step kernels of
# session 13 (a decode step's RoPE + cache write in one kernel, engines.rope_cache, and the decode
# attention's Pallas combine) were off by default then (on since session 14); $SPECTRACE_DECODE_KERNELS
# names them (KERNELS, default rope+combine; "none": the XLA forms), so one checkout gives both variants:
#   1. scripts/check_decode_kernels.py: both kernels against their XLA forms (time, difference),
#      and the 1B engine's greedy tokens with them against the XLA forms;
#   2. scripts/bench_variants.py, 8B/1B pipeline, 64-token decode: off against on, round-robin (N, default 12);
#   3. scripts/probe_decode_ops.py for the 8B and the 1B with the kernels on (device ops and launch gaps per step);
#   4. engines.bench.spec and engines.bench.base against transformers (RUNS, default 5; gpu_perf.sh steps 2 and 1).
# STEPS picks steps (default "1 2 3"; then STEPS=4 in a second call).
# The session's first run (evidence *_v1) had both kernels on by default in the checkout, with the
# combine one program per KV head, against .bench_before = `git archive 7808288 tracer engines`.
set -euo pipefail
STEPS=${STEPS:-1 2 3}
KERNELS=${KERNELS:-rope+combine}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
1) python3 scripts/check_decode_kernels.py 2>&1 | quiet | tee "$OUT/check_decode_kernels.txt" ;;
2) python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-12}" --variant off=.,SPECTRACE_DECODE_KERNELS=none \
       --variant "on=.,SPECTRACE_DECODE_KERNELS=$KERNELS" --out "$OUT" 2>&1 | quiet | tee "$OUT/bench_variants_s13${TAG:-}.txt"
   mv "$OUT/bench_variants.json" "$OUT/bench_variants_s13${TAG:-}.json" ;;
3) for m in ${MODELS:-llama-3.1-8b llama-3.2-1b}; do
     SPECTRACE_DECODE_KERNELS=$KERNELS PROBE_MODEL=$m PROBE_TOKENS=8 python3 scripts/probe_decode_ops.py 2>&1 | quiet \
       | tee "$OUT/probe_decode_ops_$m.txt"
   done ;;
4) STEPS="2 1" RUNS=${RUNS:-5} bash scripts/gpu_perf.sh ;;
esac; done
