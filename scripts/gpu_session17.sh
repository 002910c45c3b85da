#!/usr/bin/env bash
# Session 17's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_before"] where
# .bench_before is the tree before the session (`git archive 5956bde tracer engines | tar -x -C
# .bench_before`). Two host-and-device trims of the speculative TTFT: a prefill chunk's inputs
# placed as one [2, 1, T] copy (tokens; positions) with the last real row counted on the device
# (three copies before), and the draft look-ahead's last step fed for its queries only (no LM
# head, no last-layer attention or MLP: nobody reads the token after it).
#   1. the final tree: scripts/check_handover.py (the queued pruned chunk against the reference
#      forward), engines.bench.spec and engines.bench.base against transformers (RUNS_SPEC,
#      default 5), and scripts/bench_variants.py before/after with 64 decoded tokens (RUNS,
#      default 12) with each variant's host timeline;
#   2. scripts/probe_host.py: host costs on the GPU machine (copies, syncs, a chunk's dispatch,
#      tokenization);
#   3. scripts/probe_split_chunk.py with the draft's XLA options (PROBE_ENGINE=spec, the default
#      since session 16's runs, which compiled the 1B as the base's chunks): one chunk against
#      2048 rows first and the continued rest, timed and profiled side by side, with each
#      form's longest device idle stretches (PROBE_REPS=6 in this session's two runs);
#   4. scripts/probe_dispatch.py with the draft's options: the host events inside the chunk's call;
#   5. bench_variants: the draft's chunk without command buffers (CUDA graphs) against the
#      default (step 4: with them its first kernel starts ~1.75 ms after the call, ~0.9 ms later
#      than without; session 15's n=10 comparison could not resolve 1%);
#   h. step 1 when the machine is an H200 (the GPU), else steps 3 and 4.
set -euo pipefail
STEPS=${STEPS:-"1"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
1) timeout 200 python3 scripts/check_handover.py 2>&1 | quiet | tee "$OUT/check_handover.txt" || true
   STEPS="2 1" RUNS=${RUNS_SPEC:-5} bash scripts/gpu_perf.sh
   timeout 300 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-12}" --gen-len 64 \
     --variant before=.bench_before --variant after=. 2>&1 | quiet | tee "$OUT/bench_variants_session.txt" || true ;;
2) timeout 200 python3 scripts/probe_host.py 2>&1 | quiet | tee "$OUT/probe_host.txt" || true ;;
3) PROBE_SPLITS=2048 PROBE_PROFILE=1 timeout 300 python3 scripts/probe_split_chunk.py 2>&1 | quiet \
     | tee "$OUT/probe_split_chunk_spec.txt" || true ;;
4) timeout 200 python3 scripts/probe_dispatch.py 2>&1 | quiet | tee "$OUT/probe_dispatch_spec.txt" || true ;;
5) BASE_XLA="base:xla_gpu_enable_command_buffer=;base:xla_gpu_enable_triton_gemm=false"  # the base's default
   timeout 300 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-16}" --variant default=. \
     --variant draft_nocb=.,SPECTRACE_CHUNK_XLA="$BASE_XLA;spec:xla_gpu_enable_command_buffer=" 2>&1 | quiet \
     | tee "$OUT/bench_variants_draft_nocb.txt" || true ;;
h) if grep -q H200 "$OUT/gpu.txt"; then STEPS=1 bash "$0"; else STEPS="3 4" bash "$0"; fi ;;
esac; done
