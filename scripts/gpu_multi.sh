#!/usr/bin/env bash
# Issue 16's multi-GPU measurements in one device call (nvidia-h200-x2/-x4/-x8), carry [".whl"]:
#   scripts/bench_multi_gpu.py --big: Llama-3.1-8B base / Llama-3.2-1B draft (random bf16), the
#   10741-token prompt, keep 0.10, device scoring, one 16384 chunk: TP 1/2/4/8 full prefill and the
#   collective time per chunk, speculative TTFT same device vs disjoint groups, the --xplane trace of
#   those with the per-device device-time table, and the 70B shape over every GPU with the 8B draft.
# Results under $OUT: gpu.txt, bench_multi_gpu.txt, bench_multi_gpu.json, xplane_spec.pftrace.
# N (default 10) runs per variant; ARGS adds options (e.g. ARGS="--tp 1,2"); BIG= drops the 70B section.
set -euo pipefail
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nvidia-smi topo -m 2>&1 | tee -a "$OUT/gpu.txt" || true
python3 scripts/bench_multi_gpu.py --n "${N:-10}" ${BIG---big} --out "$OUT" ${ARGS:-} 2>&1 \
    | grep -v -e Warning -e "PyTorch was not found" | tee "$OUT/bench_multi_gpu.txt"
