#!/usr/bin/env bash
# Session 10's H200 runs (issue 19), results under $OUT; carry [".whl", ".bench_before", ".bench_ac",
# ".bench_b"], each made by `git archive COMMIT tracer engines | tar -x -C DIR` (git-ignored):
# .bench_before 6d13817 (the tree before this session); .bench_ac c6a2562 (prefetched copies and
# the LM-head threshold); .bench_b 227708c (and scoring queued behind the look-ahead):
#   1. scripts/bench_variants.py, 8B/1B pipeline with a 64-token decode, the variants in VARIANTS
#      (default: before, ac, this checkout; the first run; the second was ac, b, this checkout);
#   2. the same, this checkout against XLA options per program: the draft's chunk on cuBLAS
#      (Triton GEMMs off, as the base's) and the look-ahead without command buffers;
#   3. engines.bench.base and engines.bench.spec against transformers (RUNS, default 5);
#   4. spectrace run --xplane of the pair with device scoring (device time, idle gaps);
#   5. scripts/bench_recording.py --n 40: recording on vs off with the queued programs, alternating.
# STEPS picks steps (default "1"); VARIANTS overrides step 1's list (one per line).
set -euo pipefail
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PAIR=(--base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 16384)
variants() {  # $1: output name; stdin: one variant per line
  local args=() v
  while IFS= read -r v; do [ -n "$v" ] && args+=(--variant "$v"); done
  python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-16}" "${args[@]}" --out "$OUT" 2>&1 \
      | grep -v Warning | grep -v "^[WIE][0-9]" | tee "$OUT/$1.txt"
  [ -f "$OUT/bench_variants.json" ] && mv "$OUT/bench_variants.json" "$OUT/$1.json" || true
}
for step in $STEPS; do case $step in
1) variants bench_variants_s10 <<< "${VARIANTS:-before=.bench_before
ac=.bench_ac
after=.}" ;;
2) variants bench_variants_xla <<< "after=.
draft-cublas=.,SPECTRACE_CHUNK_XLA=base:xla_gpu_enable_command_buffer=;base:xla_gpu_enable_triton_gemm=false;spec:xla_gpu_enable_triton_gemm=false
lookahead-no-cmdbuf=.,SPECTRACE_DECODE_XLA=spec:xla_gpu_enable_command_buffer=" ;;
3) STEPS="2 1" RUNS=${RUNS:-5} bash scripts/gpu_perf.sh ;;
4) python3 -m spectrace.tracer.cli run "${PAIR[@]}" --scoring device --gen-len 16 --xplane --out /tmp/run8b_xplane \
       2>&1 | grep -v "^[WIE][0-9]" | tee "$OUT/run8b_xplane.txt"
   cp /tmp/run8b_xplane/ttft.json "$OUT/run8b_xplane_ttft.json" ;;
5) python3 scripts/bench_recording.py "${PAIR[@]}" --n "${N5:-40}" --out "$OUT" 2>&1 \
       | grep -v "^[WIE][0-9]" | tee "$OUT/bench_recording.txt" ;;
esac; done
