#!/usr/bin/env bash
# Session 19's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_before"] where
# .bench_before is the tree before the session (`git archive 4b2a0f9 tracer engines | tar -x -C
# .bench_before`).
#   u. scripts/probe_graph_updates.py: which programs of a request update their CUDA graph
#      before launching it, and how long after the draft chunk's span its first kernel starts
#      (TAG names the output; PROBE_POINTERS=1 and PROBE_ALONE=1 as the probe says, e.g.
#      `STEPS=u PROBE_ALONE=1 PROBE_POINTERS=1 TAG=_alone`);
#   m. the same with XLA's command-buffer update mode $MODE (default SKIP_TEMP: the program's
#      temporary buffer at a fixed virtual address, through the VMM allocator, so a run whose
#      temporaries landed elsewhere does not re-record the graph's commands that use them), then
#      bench_variants of the default against it (step x alone);
#   w. the decode programs' while loop (the look-ahead's and decode's lax.scan) inside their CUDA
#      graph (command buffer types + WHILE, CONDITIONAL), and also unrolled there: probe_graph_updates
#      (with the chunk programs' buffer addresses, PROBE_POINTERS=1) for the default and both, then
#      bench_variants of the default against the unrolled one;
#   l. the draft's look-ahead alone with its loop unrolled in its graph (w's options on the spec
#      engine's decode program only), bench_variants against the default;
#   s. the session's side by side: bench_variants before (.bench_before) and after (this tree), n=10,
#      64 decoded tokens (the chunk programs keep the whole cache in place, model.chunk_jit);
#   7. session 18's step 7: engines.bench.spec with device scoring measured first;
#   1. session 18's step 1 (check_handover, bench.spec and bench.base against transformers,
#      bench_variants before/after), on this session's tree.
set -euo pipefail
STEPS=${STEPS:-"u"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
u) timeout 240 python3 scripts/probe_graph_updates.py 2>&1 | quiet | tee "$OUT/probe_graph_updates${TAG:-}.txt" || true ;;
m) MODE=${MODE:-SKIP_TEMP}
   strings "$(python3 -c 'import jaxlib, os; print(os.path.dirname(jaxlib.__file__))')"/*.so 2>/dev/null \
     | grep -aoE "(ALWAYS_UPDATE|SKIP_TEMP|SKIP_PROFILED|NEVER_UPDATE)" | sort -u | tee "$OUT/update_modes.txt" || true
   STEPS=u XLA_FLAGS="--xla_gpu_command_buffer_update_mode=$MODE" TAG=_$MODE bash "$0"
   STEPS=x MODE=$MODE bash "$0" ;;
x) MODE=${MODE:-SKIP_TEMP}
   timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-10}" --gen-len 64 --out "$OUT" \
     --variant default=. --variant "update_$MODE=.,XLA_FLAGS=--xla_gpu_command_buffer_update_mode=$MODE" 2>&1 \
     | quiet | tee "$OUT/bench_variants_update_$MODE.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_update_$MODE.json" 2>/dev/null || true ;;
w|l) CB="xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,DYNAMIC_SLICE_FUSION,WHILE,CONDITIONAL"
   W="base:$CB;spec:$CB"
   U="$W;base:xla_gpu_command_buffer_unroll_loops=true;spec:xla_gpu_command_buffer_unroll_loops=true"
   if [ "$step" = l ]; then
     L="spec:$CB;spec:xla_gpu_command_buffer_unroll_loops=true"
     timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-10}" --gen-len 64 --out "$OUT" \
       --variant default=. --variant "lookahead_unroll=.,SPECTRACE_DECODE_XLA=$L" 2>&1 \
       | quiet | tee "$OUT/bench_variants_lookahead_unroll.txt" || true
     mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_lookahead_unroll.json" 2>/dev/null || true
     continue
   fi
   STEPS=u PROBE_POINTERS=1 TAG=_default bash "$0"
   STEPS=u SPECTRACE_DECODE_XLA="$W" TAG=_while bash "$0"
   STEPS=u SPECTRACE_DECODE_XLA="$U" TAG=_while_unroll bash "$0"
   timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-8}" --gen-len 64 --out "$OUT" \
     --variant default=. --variant "while_unroll=.,SPECTRACE_DECODE_XLA=$U" 2>&1 \
     | quiet | tee "$OUT/bench_variants_while_unroll.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_while_unroll.json" 2>/dev/null || true ;;
s) timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-10}" --gen-len 64 --out "$OUT" \
     --variant before=.bench_before --variant after=. 2>&1 | quiet | tee "$OUT/bench_variants_session.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_session.json" 2>/dev/null || true ;;
1|7) OUT=$OUT STEPS=$step bash scripts/gpu_session18.sh || true ;;
*) echo "gpu_session19.sh: no step '$step' (steps: u, m, x, w, l, s, 1, 7)" >&2; exit 2 ;;
esac; done
