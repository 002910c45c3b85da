#!/usr/bin/env bash
# The by-hand H100 performance evidence for issues 3 and 4, in one device call (results under $OUT):
#   0. the cuDNN chunked-prefill path against the engine's masked reference forward (bf16, 1B);
#   1. engines.bench.base: llama-3.1-8b, 10741-token prompt, full prefill TTFT and decode vs transformers;
#   2. engines.bench.spec: base llama-3.1-8b + draft llama-3.2-1b, keep 0.10, host vs device scoring;
#   3. spectrace run of that pair (device scoring): the trace whose span tree says where TTFT went;
#   4. the same run with --xplane: device busy/idle and the heaviest kernels inside every span
#      (the trace stays in /tmp: too large to bring back; ttft.json and the printed table come back);
#   5. scripts/probe_lookahead.py: the look-ahead's per-step and per-call cost and its device ops by time;
#   6. scripts/probe_host.py: host round trips, small copies and tokenization on this machine.
# All steps take more than one device call's 10 minutes: run STEPS="0 1 2" and STEPS="3 4 5 6" as two calls.
# Needs the wheels from scripts/fetch_device_wheels.sh carried as .whl. STEPS picks steps (default "0 1 2 3 4 5 6"),
# PSL the prefill_seq_len (16384: the 10741-token prompt in one chunk; on the H100 that saved ~15 ms of
# the draft pass against 4096, docs/evidence/h100-session4/probe_psl16384.txt).
set -euo pipefail
. scripts/device_env.sh  # the wheels, and the checkout importable as spectrace
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-0 1 2 3 4 5 6}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for step in $STEPS; do case $step in
0) python3 - <<'PY' 2>&1 | tee "$OUT/check.txt"
import numpy as np
from spectrace.engines.base import BaseEngine
e = BaseEngine.from_pretrained("llama-3.2-1b", prefill_seq_len=256, ctx_len=1024)
ids = np.random.default_rng(0).integers(3, e.config.vocab_size, 700).astype(np.int32)
chunked = e.prefill_from_ids(ids, np.arange(700, dtype=np.int32)).logits          # 3 chunks, cuDNN
ref = e.forward_logits(ids)[-1]                                                     # masked, no cache
rel = np.abs(chunked - ref).max() / np.abs(ref).max()
print(f"cuDNN chunked vs masked reference (bf16, 700 tokens, 3 chunks): max rel err {rel:.4f}, "
      f"top-1 equal {int(chunked.argmax()) == int(ref.argmax())}")
PY
;;
1) python3 -m spectrace.engines.bench.base --preset llama-3.1-8b --prompt-len 10741 --prefill-seq-len "${PSL:-16384}" \
       --gen 64 --runs "${RUNS:-10}" 2>&1 | tee "$OUT/bench_base_8b.txt" ;;
2) python3 -m spectrace.engines.bench.spec --base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --keep 0.10 \
       --prefill-seq-len "${PSL:-16384}" -n "${RUNS:-10}" --out "$OUT/bench_spec.json" 2>&1 | tee "$OUT/bench_spec.txt" ;;
3) python3 -m spectrace.tracer.cli run --base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --scoring device \
       --prefill-seq-len "${PSL:-16384}" --gen-len 16 --out "$OUT/run8b" 2>&1 | tee "$OUT/run8b.txt"
   python3 -c "from spectrace.tracer.testing import Trace; print(Trace.load('$OUT/run8b/trace.pftrace').tree())" \
       > "$OUT/run8b_tree.txt" ;;
4) python3 -m spectrace.tracer.cli run --base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --scoring device \
       --prefill-seq-len "${PSL:-16384}" --gen-len 16 --xplane --out /tmp/run8b_xplane 2>&1 | tee "$OUT/run8b_xplane.txt"
   cp /tmp/run8b_xplane/ttft.json "$OUT/run8b_xplane_ttft.json" ;;
5) python3 scripts/probe_lookahead.py > "$OUT/probe_lookahead.txt" 2>&1; cat "$OUT/probe_lookahead.txt" ;;
6) python3 scripts/probe_host.py 2>&1 | tee "$OUT/probe_host.txt" ;;
esac; done
