#!/usr/bin/env bash
# Session 9's H200 runs (issue 19), results under $OUT; carry [".whl", ".bench_before"]
# (.bench_before: `git archive f5ed40b tracer engines | tar -x -C .bench_before`, the tree before
# this session):
#   0. scripts/check_chunk_xla.py and scripts/probe_lm_head.py: the chunked prefill (with the
#      two-row LM head) against the reference forward; the LM head's forms timed;
#   1. scripts/check_decode_attention.py: the Pallas decode attention's block shapes, warps and
#      stages against the XLA form, per call on the device ($OUT/check_decode_attention.txt);
#   2. scripts/bench_variants.py, 8B/1B pipeline with a 64-token decode: the tree before against
#      this checkout ($OUT/bench_variants.txt);
#   3. spectrace run --xplane of that pair with device scoring: the device-time table and the
#      longest idle gaps ($OUT/run8b_xplane.txt, ttft.json, the trace gzipped).
# STEPS picks steps (default "0 1 2"); VARIANTS overrides step 2's list (one per line).
set -euo pipefail
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-0 1 2}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PAIR=(--base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 16384)
for step in $STEPS; do case $step in
0) python3 scripts/check_chunk_xla.py 2>&1 | grep -v "^[WIE][0-9]" | tee "$OUT/check_chunk_xla.txt"
   python3 scripts/probe_lm_head.py 2>&1 | grep -v "^[WIE][0-9]" | tee "$OUT/probe_lm_head.txt" ;;
1) timeout 300 python3 scripts/check_decode_attention.py 2>&1 | grep -v "^[WIE][0-9]" \
       | tee "$OUT/check_decode_attention.txt" ;;
2) args=()
   while IFS= read -r v; do [ -n "$v" ] && args+=(--variant "$v"); done <<< "${VARIANTS:-before=.bench_before
after=.}"
   python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-12}" "${args[@]}" --out "$OUT" 2>&1 \
       | grep -v Warning | grep -v "^[WIE][0-9]" | tee "$OUT/bench_variants.txt" ;;
3) python3 -m spectrace.tracer.cli run "${PAIR[@]}" --scoring device --gen-len 16 --xplane --out /tmp/run8b_xplane \
       2>&1 | grep -v "^[WIE][0-9]" | tee "$OUT/run8b_xplane.txt"
   cp /tmp/run8b_xplane/ttft.json "$OUT/run8b_xplane_ttft.json"
   gzip -c /tmp/run8b_xplane/trace.pftrace > "$OUT/run8b_xplane.pftrace.gz" ;;
esac; done
