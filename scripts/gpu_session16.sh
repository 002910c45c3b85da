#!/usr/bin/env bash
# Session 16's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_before"] where
# .bench_before is the tree before the session (`git archive a6fee84 tracer engines | tar -x -C
# .bench_before`). In the 1B draft's look-ahead step (7 of them in the speculative TTFT) the
# two-row GEMMs left XLA two concatenates a layer (before the QKV and out projections, ~36 us of
# a ~1430 us step on an H100, this session's first probe); now the fused norm and the decode
# attention's combine write the row twice and the next norm reads row 0 of the product.
#   1. scripts/probe_decode_ops.py on the 1B look-ahead step (8 tokens): before, after, and after
#      with XLA's split-K off for the decode program (no such option in this XLA, it turned out);
#   2. scripts/probe_chunk_rows.py: the 8B's prefill chunk at 1024..1152 rows (the queued pruned
#      base chunk was 1152 rows for 1077 kept tokens: would fewer padded rows pay? PROBE_ROWS
#      narrows it: the output is then probe_chunk_rows_2.txt);
#   3. scripts/bench_variants.py before/after (RUNS, default 12), with each variant's host timeline;
#   4. engines.bench.spec against transformers (RUNS_SPEC, default 5);
#   5. scripts/check_decode_attention.py: the 1B's decode attention (11.3 us a layer against ~6.7 for
#      its keys and values in the look-ahead step) over block, slots per program, warps and
#      stages, cycling 4 cache copies so it reads HBM, not L2;
#   6. bench_variants: the draft's chunk on cuBLAS (as the base's) against Triton GEMMs, on the H100;
#   7. scripts/probe_host.py: host costs on the GPU machine (copies, syncs, a chunk's dispatch,
#      tokenization in 4 to 64 pieces);
#   8. bench_variants: .bench_after (this session's tree before the step being measured, copied by
#      hand; carry it) against this checkout ($LABEL names the output);
#   9. scripts/probe_split_chunk.py: the draft's prompt as one chunk against a small first chunk
#      and the continued rest (would tokenizing the rest during the first chunk pay?); with
#      PROBE_PROFILE=1 PROBE_SPLITS=2048, the two forms' device ops side by side;
#  10. scripts/probe_dispatch.py: the host events inside the draft chunk's dispatch (~3.9 ms);
#  11. probe_decode_ops on the 1B look-ahead step with step 5's fastest decode attention setting
#      for head size 64 (block 32, 4 warps, 3 stages) against the default (block 64);
#  12. the final tree: scripts/check_handover.py (the queued pruned chunk, now 1104 rows, against
#      the reference forward), engines.bench.spec and engines.bench.base against transformers,
#      and bench_variants against the session's starting tree with 64 decoded tokens.
set -euo pipefail
STEPS=${STEPS:-"1 2"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
mkdir -p /tmp/src_before/spectrace
ln -sfn "$PWD/.bench_before/tracer" /tmp/src_before/spectrace/tracer
ln -sfn "$PWD/.bench_before/engines" /tmp/src_before/spectrace/engines
probe() {  # label, then the command's environment
  local label=$1; shift
  env "$@" PROBE_MODEL=llama-3.2-1b PROBE_TOKENS=8 PROBE_HLO_DUMP=$(mktemp -d) timeout 200 python3 scripts/probe_decode_ops.py \
    2>&1 | quiet > "$OUT/probe_decode_ops_1b_$label.txt" || true
  echo "== $label"; head -4 "$OUT/probe_decode_ops_1b_$label.txt"
}
for step in $STEPS; do case $step in
1) probe before PYTHONPATH="/tmp/src_before:/tmp/site"
   probe after
   probe after_nosplitk SPECTRACE_DECODE_XLA="base:xla_gpu_enable_split_k_autotuning=false" ;;
2) timeout 300 python3 scripts/probe_chunk_rows.py 2>&1 | quiet | tee "$OUT/probe_chunk_rows${PROBE_ROWS:+_2}.txt" || true ;;
3) timeout 420 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-12}" --variant before=.bench_before \
     --variant after=. 2>&1 | quiet | tee "$OUT/bench_variants.txt" || true ;;
4) STEPS="2" RUNS=${RUNS_SPEC:-5} bash scripts/gpu_perf.sh ;;
5) ATTN_SHAPES=llama-3.2-1b ATTN_PAD=0 ATTN_COPIES=4 ATTN_CONFIGS="64,256,4,3 64,128,4,3 64,128,2,3 64,256,2,3 \
     32,128,4,2 32,256,4,3 64,256,8,3 64,128,4,2 128,256,4,3 64,256,4,4" timeout 240 \
     python3 scripts/check_decode_attention.py 2>&1 | quiet | tee "$OUT/check_decode_attention_1b.txt" || true ;;
6) BASE_XLA="base:xla_gpu_enable_command_buffer=;base:xla_gpu_enable_triton_gemm=false"  # the base's default
   timeout 420 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-12}" --variant after=. \
     --variant draft_cublas=.,SPECTRACE_CHUNK_XLA="$BASE_XLA;spec:xla_gpu_enable_triton_gemm=false" 2>&1 | quiet \
     | tee "$OUT/bench_variants_draft_cublas.txt" || true ;;
7) timeout 200 python3 scripts/probe_host.py 2>&1 | quiet | tee "$OUT/probe_host.txt" || true ;;
8) timeout 420 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-12}" --variant before=.bench_after \
     --variant after=. 2>&1 | quiet | tee "$OUT/bench_variants_${LABEL:-step8}.txt" || true ;;
9) timeout 300 python3 scripts/probe_split_chunk.py 2>&1 | quiet | tee "$OUT/probe_split_chunk${PROBE_PROFILE:+_profile}.txt" || true ;;
10) timeout 200 python3 scripts/probe_dispatch.py 2>&1 | quiet | tee "$OUT/probe_dispatch.txt" || true ;;
11) probe attn_default
    probe attn_b32 PROBE_ATTN_TUNED="64:32,4,3" ;;
12) timeout 200 python3 scripts/check_handover.py 2>&1 | quiet | tee "$OUT/check_handover.txt" || true
    STEPS="2 1" RUNS=${RUNS_SPEC:-5} bash scripts/gpu_perf.sh
    timeout 300 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-12}" --gen-len 64 \
      --variant before=.bench_before --variant after=. 2>&1 | quiet | tee "$OUT/bench_variants_session.txt" || true ;;
esac; done
