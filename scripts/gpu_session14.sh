#!/usr/bin/env bash
# Session 14's GPU runs (issue 19), results under $OUT; carry [".whl"]. The Triton GEMMs of a decode
# step (the 1B's look-ahead, the 8B's decode) run at 50-90% of the bandwidth their weights need; the
# small ones (QKV, output projection: 2 rows, 2048-4096 columns) the least. XLA's autotuner picks
# their tiles from a short list; `xla_gpu_exhaustive_tiling_search` makes it search every tiling
# (split-K included). Per program, through $SPECTRACE_DECODE_XLA (decode and look-ahead programs)
# and $SPECTRACE_CHUNK_XLA (prefill chunks; setting it replaces the base's defaults, repeated here):
#   1. scripts/probe_decode_ops.py for the 1B and the 8B with the exhaustive search (per-GEMM µs,
#      against docs/evidence/h100-session14/probe_decode_ops_*.txt, the default search);
#   2. scripts/bench_variants.py, 8B/1B pipeline, 64-token decode: default against exhaustive (N, default 12);
#   3. engines.bench.spec and engines.bench.base against transformers (RUNS, default 5);
#   4. spectrace run --xplane of the 8B/1B pipeline (gpu_perf.sh step 4): device busy and idle per
#      span, the longest idle gaps, on the tree with the decode-step kernels on;
#   (steps 5 and 6 were engines.gemv's kernel alone and in the pipeline. Session 15 ran step 5:
#   slower than XLA's dot on seven of eight shapes, level on the 1B's gate|up, 1.31x summed; step 6
#   was not needed, and the kernel was removed: docs/performance.md "Session 15").
# STEPS picks steps (default 4).
# MODELS: the probe's models.
set -euo pipefail
STEPS=${STEPS:-4}
EXH=xla_gpu_exhaustive_tiling_search=true
DECODE_XLA="base:$EXH;spec:$EXH"
CHUNK_XLA="base:xla_gpu_enable_command_buffer=;base:xla_gpu_enable_triton_gemm=false;spec:$EXH"
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
1) for m in ${MODELS:-llama-3.2-1b llama-3.1-8b}; do
     SPECTRACE_DECODE_XLA=$DECODE_XLA PROBE_MODEL=$m PROBE_TOKENS=8 \
       timeout 280 python3 scripts/probe_decode_ops.py 2>&1 | quiet | tee "$OUT/probe_exh_$m.txt" || true
   done ;;
2) python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-12}" --variant default=. \
       --variant "exh=.,SPECTRACE_DECODE_XLA=$DECODE_XLA,SPECTRACE_CHUNK_XLA=$CHUNK_XLA" --out "$OUT" 2>&1 | quiet \
       | tee "$OUT/bench_variants_exh.txt"
   mv "$OUT/bench_variants.json" "$OUT/bench_variants_exh.json" ;;
3) STEPS="2 1" RUNS=${RUNS:-5} bash scripts/gpu_perf.sh ;;
4) STEPS=4 bash scripts/gpu_perf.sh 2>&1 | quiet | tail -80 ;;
esac; done
