#!/usr/bin/env bash
# Session 20's GPU runs (issue 19), results under $OUT; carry [".whl"], and for step s also
# ".bench_before", a tree to compare against (`git archive <rev> tracer engines | tar -x -C .bench_before`).
# TAG names step f's output files (bench_variants_fixed$TAG.*).
#   t. scripts/probe_tokenize.py: the draft window's tokenization against its piece count;
#   p. probe_graph_updates with the draft's chunk at fixed addresses (SPECTRACE_FIXED_BUFFERS=spec,
#      engines.fixed_buffers) and the chunk calls' addresses;
#   f. bench_variants of the default against the draft's chunk at fixed addresses, n=$RUNS (default 8);
#   b. engines.bench.spec, device scoring only, against transformers (n=$RUNS_SPEC, default 8);
#   g. probe_graph_updates of the default and of the draft's chunk at fixed addresses, one after the other;
#   a. session 19's probe of the draft chunk alone, every buffer held still (PROBE_ALONE=1);
#   s. bench_variants before (.bench_before) and after (this tree), n=$RUNS (default 10).
set -euo pipefail
STEPS=${STEPS:-"t f"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
t) timeout 120 python3 scripts/probe_tokenize.py 2>&1 | quiet | tee "$OUT/probe_tokenize.txt" || true ;;
p) SPECTRACE_FIXED_BUFFERS=spec PROBE_POINTERS=1 timeout 200 python3 scripts/probe_graph_updates.py 2>&1 | quiet \
     | tee "$OUT/probe_graph_updates_fixed.txt" || true ;;
f) timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-8}" --gen-len 64 --out "$OUT" \
     --variant default=.,SPECTRACE_FIXED_BUFFERS= --variant fixed=.,SPECTRACE_FIXED_BUFFERS=spec 2>&1 \
     | quiet | tee "$OUT/bench_variants_fixed${TAG:-}.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_fixed${TAG:-}.json" 2>/dev/null || true ;;
b) timeout 240 python3 -m spectrace.engines.bench.spec "${PAIR[@]}" --keep 0.10 --modes device -n "${RUNS_SPEC:-8}" \
     --out "$OUT/bench_spec.json" 2>&1 | quiet | tee "$OUT/bench_spec.txt" || true ;;
g) for fixed in "" spec; do
     SPECTRACE_FIXED_BUFFERS=$fixed timeout 200 python3 scripts/probe_graph_updates.py 2>&1 | quiet \
       | tee "$OUT/probe_graph_updates_g${fixed:+_fixed}.txt" || true
   done ;;
a) PROBE_ALONE=1 PROBE_POINTERS=1 PROBE_RUNS=6 timeout 200 python3 scripts/probe_graph_updates.py 2>&1 | quiet \
     | tee "$OUT/probe_graph_updates_alone.txt" || true ;;
s) timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-10}" --gen-len 64 --out "$OUT" \
     --variant before=.bench_before --variant after=. 2>&1 | quiet | tee "$OUT/bench_variants_session.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_session.json" 2>/dev/null || true ;;
*) echo "gpu_session20.sh: no step '$step' (steps: t, p, f, b, g, a, s)" >&2; exit 2 ;;
esac; done
