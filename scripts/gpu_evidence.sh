#!/usr/bin/env bash
# The by-hand GPU evidence for issues 5 and 7, in one device call (results under $OUT):
#   1. spectrace run, Llama-3.1-8B base + Llama-3.2-1B draft (random weights, bf16), 10741-token
#      prompt, --xplane: the merged trace with GPU kernels under each prefill.chunk;
#      scripts/trace_stats.py prints the events per track and the alignment residual.
#   2. spectrace bench (seed 003's set) on the Llama-3.2-1B preset: scan vs Python loops.
# Needs the wheels from scripts/fetch_device_wheels.sh carried as .whl.
set -euo pipefail
. scripts/device_env.sh  # the wheels, and the checkout importable as spectrace
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m spectrace.tracer.cli run --base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 2048 \
    --scoring "${SCORING:-device}" --gen-len 16 --xplane --out "$OUT/run8b" | tee "$OUT/run8b.txt"
rm -rf "$OUT/run8b/xplane"   # already merged into trace.pftrace
python3 scripts/trace_stats.py "$OUT/run8b/trace.pftrace" --json "$OUT/run8b/trace_stats.json" | tee "$OUT/trace_stats.txt"
python3 -m spectrace.tracer.cli bench --set seed003 --base llama-3.2-1b --prompt-len 512 --prefill-seq-len 512 \
    --gen-len 64 --runs 3 --out "$OUT/bench003" | tee "$OUT/bench003.txt"
