#!/usr/bin/env bash
# Session 7's H200 evidence (issues 15 and 19), results under $OUT; carry [".whl", ".bench_before"]:
#   1. scripts/bench_variants.py: the one-device pipeline from the tree before the multi-device
#      work (.bench_before: `git archive f0dcbd3 tracer engines | tar -x -C .bench_before`) against
#      this checkout, two worker processes, alternating requests (8B/1B, 10741 tokens, one 16384 chunk);
#   2. scripts/bench_recording.py --n 40 --xplane-rounds 4: recording on vs off, then --xplane's cost;
#   3. spectrace run --xplane of that pair: the device-time table (per device when several ran) and
#      the Perfetto file's tracks (each GPU plane its own process track).
# STEPS picks steps (default "1 2 3").
set -euo pipefail
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1 2 3}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PAIR=(--base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 16384)
for step in $STEPS; do case $step in
1) python3 scripts/bench_variants.py "${PAIR[@]}" --n "${N1:-15}" --out "$OUT" 2>&1 \
       | grep -v Warning | tee "$OUT/bench_single_device.txt" ;;
2) python3 scripts/bench_recording.py "${PAIR[@]}" --n "${N2:-40}" --xplane-rounds 4 --xplane-k 5 --out "$OUT" 2>&1 \
       | tee "$OUT/bench_recording.txt" ;;
3) python3 -m spectrace.tracer.cli run "${PAIR[@]}" --scoring device --gen-len 16 --xplane --out /tmp/run8b_xplane \
       2>&1 | tee "$OUT/run8b_xplane.txt"
   cp /tmp/run8b_xplane/ttft.json "$OUT/run8b_xplane_ttft.json"
   python3 - <<'PY' 2>&1 | tee "$OUT/run8b_xplane_tracks.txt"
from collections import Counter
from spectrace.tracer.perfetto import read_pftrace
t = read_pftrace("/tmp/run8b_xplane/trace.pftrace")
procs = {k.pid: k.name for k in t.tracks.values() if k.pid is not None and k.tid is None and k.parent is None}
per = Counter(procs.get(t.process_of(s.track), "?") for s in t.slices)
for name, n in sorted(per.items()):
    print(f"{n:>8} slices  {name}")
PY
   ;;
esac; done
