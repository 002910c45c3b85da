#!/usr/bin/env bash
# Session 8's H200 probes (issue 19), results under $OUT; carry [".whl"]:
#   1. which command-buffer / loop XLA options this jaxlib accepts (a trivial compile each), and
#      the xla_gpu_* option names it knows ($OUT/xla_gpu_flags.txt);
#   2. scripts/bench_variants.py, 8B/1B pipeline with 64-token decode, variants side by side:
#      process-wide SKIP_TEMP command-buffer updates (stable temp addresses: no per-call graph
#      update), the base chunk with command buffers under it, and per-program options on the
#      decode/look-ahead programs ($SPECTRACE_DECODE_XLA).
#   3. the decode-step kernel count: the tree before this session's softmax change (.bench_before,
#      `git archive b5cec1b tracer engines | tar -x -C .bench_before`) against this checkout, and
#      this checkout without the two-row GEMM trick (.bench_nogemmrows: a copy with
#      GEMM_ROWS_BACKENDS = []); carry [".whl", ".bench_before", ".bench_nogemmrows"].
# STEPS picks steps (default "1 2"); VARIANTS overrides step 2's list (one per line).
set -euo pipefail
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1 2}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PAIR=(--base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 16384)
SKIP="XLA_FLAGS=--xla_gpu_command_buffer_update_mode=SKIP_TEMP"
both() { echo "base:$1;spec:$1"; }
DEFAULT_VARIANTS="default=.
skiptemp=.,$SKIP
skiptemp-basecb=.,$SKIP,SPECTRACE_CHUNK_XLA=base:xla_gpu_enable_triton_gemm=false
dec-unroll=.,SPECTRACE_DECODE_XLA=$(both xla_gpu_command_buffer_unroll_loops=true)
dec-concurrent=.,SPECTRACE_DECODE_XLA=$(both xla_gpu_graph_enable_concurrent_region=true)"
for step in $STEPS; do case $step in
1) strings "$(python3 -c 'import jaxlib, os; print(os.path.dirname(jaxlib.__file__))')"/libjax_common.so 2>/dev/null \
       | grep -oE '^xla_gpu_[a-z0-9_]+$' | sort -u > "$OUT/xla_gpu_flags.txt" || true
   echo "jaxlib knows $(wc -l < "$OUT/xla_gpu_flags.txt") xla_gpu_* names"
   for f in --xla_gpu_command_buffer_update_mode=SKIP_TEMP --xla_gpu_command_buffer_unroll_loops=true \
            --xla_gpu_graph_enable_concurrent_region=true; do
     if XLA_FLAGS=$f timeout 120 python3 -c 'import jax, jax.numpy as jnp; print(float(jax.jit(lambda x: x + 1)(jnp.ones(3))[0]))' \
          >/dev/null 2>"$OUT/flag.err"; then echo "ok   $f"; else echo "FAIL $f: $(tail -1 "$OUT/flag.err")"; fi
   done | tee "$OUT/flags.txt" ;;
2) args=()
   while IFS= read -r v; do [ -n "$v" ] && args+=(--variant "$v"); done <<< "${VARIANTS:-$DEFAULT_VARIANTS}"
   python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-12}" "${args[@]}" --out "$OUT" 2>&1 \
       | grep -v Warning | tee "$OUT/bench_variants.txt" ;;
3) python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-12}" --variant before=.bench_before \
       --variant softmax=. --variant softmax-nogemmrows=.bench_nogemmrows --out "$OUT" 2>&1 \
       | grep -v Warning | grep -v "^E1202" | tee "$OUT/bench_variants_softmax.txt" ;;
esac; done
