#!/usr/bin/env bash
# Session 22's GPU runs (issue 19: does the SwiGLU epilogue pay in the pipeline?), results under
# $OUT; carry [".whl"]. Session 22 ran them on an H100 (docs/evidence/h100-session22/), after
# `STEPS="w v" bash scripts/gpu_session21.sh` (the kernel's tile configurations, 4 stages then;
# bench_variants_nocb.txt from step v, whose epilogue worker ran out of memory as the third).
# Steps e and c ran with TILES at 3 stages, step p not yet (no machine came).
#   e. bench_variants, n=$RUNS (default 16), 16 tokens decoded: this tree against
#      SPECTRACE_MLP_EPILOGUE=spec,base (two workers: a third does not fit an H100 beside them);
#   c. scripts/probe_split_chunk.py's op table of one chunk, XLA's MLP then the epilogue's, for the
#      1B draft (the draft's options) and the 8B (the base's): where the kernel's time goes;
#   p. scripts/probe_mlp_power.py for the 8B and the 1B: both MLP forms in one process,
#      round-robin, with the SM clock, board power and power-cap flag from nvidia-smi.
set -euo pipefail
STEPS=${STEPS:-"e"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
for step in $STEPS; do case $step in
e) timeout 290 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-16}" --gen-len 16 --out "$OUT" \
     --variant now=. --variant epilogue=.,SPECTRACE_MLP_EPILOGUE=spec,base 2>&1 | quiet \
     | tee "$OUT/bench_variants_epilogue_n${RUNS:-16}.txt" || true
   mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_epilogue_n${RUNS:-16}.json" 2>/dev/null || true ;;
c) for m in 1b 8b; do for v in xla epi; do
     if [ $m = 1b ]; then M=llama-3.2-1b; E=spec; R=8; else M=llama-3.1-8b; E=base; R=6; fi
     SPECTRACE_MLP_EPILOGUE=$([ $v = epi ] && echo $E || true) PROBE_MODEL=$M PROBE_ENGINE=$E PROBE_SPLITS="" \
       PROBE_PROFILE=1 PROBE_REPS=$R timeout 140 python3 scripts/probe_split_chunk.py 2>&1 | quiet \
       > "$OUT/probe_$([ $m = 1b ] && echo draft || echo full)_chunk_ops_$v.txt" || true
   done; done ;;
p) PROBE_MODEL=llama-3.1-8b PROBE_ENGINE=base timeout 200 python3 scripts/probe_mlp_power.py 2>&1 | quiet \
     | tee "$OUT/probe_mlp_power_8b.txt" || true
   PROBE_MODEL=llama-3.2-1b PROBE_ENGINE=spec PROBE_REPS=20 timeout 150 python3 scripts/probe_mlp_power.py 2>&1 \
     | quiet | tee "$OUT/probe_mlp_power_1b.txt" || true ;;
*) echo "gpu_session22.sh: no step '$step' (steps: e, c, p)" >&2; exit 2 ;;
esac; done
