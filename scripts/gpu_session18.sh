#!/usr/bin/env bash
# Session 18's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_before"] where
# .bench_before is the tree before the session (`git archive fbc5f2b tracer engines | tar -x -C
# .bench_before`).
#   1. the final tree: scripts/check_handover.py, engines.bench.spec (after two warm-ups) and
#      engines.bench.base against transformers (RUNS_SPEC runs each, default 10), and
#      scripts/bench_variants.py before/after with 64 decoded tokens (RUNS, default 12) with each
#      variant's host timeline; steps 2-5 take RUNS too (default 10);
#   2, 3. XLA's other GEMM back ends, each side by side with the defaults (no code change, per
#      program through $SPECTRACE_CHUNK_XLA / $SPECTRACE_DECODE_XLA; two workers at a time, as
#      three 8B + 1B processes may not fit 80 GB): 2, cuBLASLt for every program (XLA then
#      autotunes among cuBLASLt's algorithms, e.g. for the pruned chunk's 1104 rows); 3, cuDNN
#      GEMM fusions as autotuning candidates for the draft's programs (the only ones on Triton);
#   4. the draft's chunk as 17 CUDA graphs, not one: cuDNN's attention calls left out of its
#      command buffers (XLA's default types less CUDNN), so the first graph (the embedding and
#      layer 0 up to its attention) launches at once and the rest launch while the device runs.
#      As one graph its first kernel starts ~1.75 ms after the call (update 0.67 + cuGraphLaunch
#      1.13 ms, session 17's probe_dispatch_spec.txt); without graphs the chunk runs 1.017x;
#   5. the base's chunks with CUDA graphs (cuBLAS still): the pruned chunk is queued behind
#      scoring now, so the graph's update and launch are off the critical path and only its
#      fewer gaps between kernels would show (session 7 measured graphs before the queueing).
#      Steps 2-5 ran against the default of their time, the base's chunks without graphs; step 5's
#      variant has been the default since (so step 5 now compares the default with itself), and
#      BASE_XLA below is the new default, which $SPECTRACE_CHUNK_XLA must restate;
#   6. the op table of a pruned-sized 8B chunk (1089 tokens, fitted to 1152 rows) as the base
#      compiles it: where the pruned chunk's ~25 ms go beyond its ~18 ms of GEMMs at 840 TFLOP/s;
#   7. engines.bench.spec with device scoring measured first (--modes device,host; n=8): the
#      default order measures host scoring first, and its device-scoring TTFT has read 0.4-2.2 ms
#      above bench_variants' (each variant its own process, device scoring only) in every call;
#   h. on an H200 (the GPU) steps 1, 4, 2, else 4, 2, 1; h2: 5 and 6 (1 first on an H200).
set -euo pipefail
STEPS=${STEPS:-"1"}
. scripts/gpu_session_env.sh  # device_env.sh, $OUT, gpu.txt, PAIR, quiet
BASE_XLA="base:xla_gpu_enable_triton_gemm=false"  # the base's default (engines.host.GPU_BASE_CHUNK_XLA)
variants() {  # bench_variants of two variants, 64 tokens decoded: A B [NAME, default B's label] [N default]
  local name=${3:-${2%%=*}}
  timeout 330 python3 scripts/bench_variants.py "${PAIR[@]}" --n "${RUNS:-${4:-10}}" --gen-len 64 --out "$OUT" \
    --variant "$1" --variant "$2" 2>&1 | quiet | tee "$OUT/bench_variants_$name.txt" || true
  mv -f "$OUT/bench_variants.json" "$OUT/bench_variants_$name.json" 2>/dev/null || true
}
for step in $STEPS; do case $step in
1) timeout 200 python3 scripts/check_handover.py 2>&1 | quiet | tee "$OUT/check_handover.txt" || true
   STEPS="2 1" RUNS=${RUNS_SPEC:-10} bash scripts/gpu_perf.sh || true
   variants before=.bench_before after=. session 12 ;;
2) LT="xla_gpu_enable_cublaslt=true"
   variants default=. cublaslt=.,SPECTRACE_CHUNK_XLA="$BASE_XLA;base:$LT;spec:$LT",SPECTRACE_DECODE_XLA="base:$LT;spec:$LT" ;;
3) FUS="xla_gpu_cudnn_gemm_fusion_level=3"
   variants default=. cudnn_fusion=.,SPECTRACE_CHUNK_XLA="$BASE_XLA;spec:$FUS",SPECTRACE_DECODE_XLA="spec:$FUS" ;;
4) CB="xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,DYNAMIC_SLICE_FUSION"
   variants default=. cb_no_cudnn=.,SPECTRACE_CHUNK_XLA="$BASE_XLA;spec:$CB" ;;
5) variants default=. base_cb=.,SPECTRACE_CHUNK_XLA="base:xla_gpu_enable_triton_gemm=false" ;;
6) PROBE_MODEL=llama-3.1-8b PROBE_LEN=1089 PROBE_ENGINE=base PROBE_SPLITS="" PROBE_PROFILE=1 PROBE_REPS=6 \
     timeout 200 python3 scripts/probe_split_chunk.py 2>&1 | quiet | tee "$OUT/probe_pruned_chunk_ops.txt" || true ;;
7) timeout 300 python3 -m spectrace.engines.bench.spec "${PAIR[@]}" --keep 0.10 --modes device,host -n "${RUNS_SPEC:-8}" \
     --out "$OUT/bench_spec_device_first.json" 2>&1 | quiet | tee "$OUT/bench_spec_device_first.txt" || true ;;
h2) if grep -q H200 "$OUT/gpu.txt"; then STEPS="1 5 6" bash "$0"; else STEPS="5 6" bash "$0"; fi ;;
h) if grep -q H200 "$OUT/gpu.txt"; then STEPS="1 4 2" bash "$0"; else STEPS="4 2 1" bash "$0"; fi ;;
*) echo "gpu_session18.sh: no step '$step' (steps: 1-7, h, h2)" >&2; exit 2 ;;
esac; done
