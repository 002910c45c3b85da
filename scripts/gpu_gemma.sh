#!/usr/bin/env bash
# Issue 17's device work (Gemma), results under $OUT. Needs the wheels of scripts/fetch_device_wheels.sh
# carried as .whl. STEPS picks steps (default "refs"):
#   refs   scripts/make_gemma_reference.py: transformers' logits for the small Gemma 2 / 3 test models
#          (float32, TF32 off) -> $OUT/gemma_reference.npz (copy it to tests/engines/data/);
#   check  the engine's bf16 chunked prefill of gemma-3-1b against its own masked reference forward;
#   run    spectrace run --base gemma-3-4b --draft gemma-3-1b (device scoring, 10741-token prompt);
#   bench  spectrace bench --set seed003 on gemma-3-1b, n=5 (PROMPT_LEN 64, GEN_LEN 128: docs/gemma.md);
#   seed   scripts/bench_seed003_gemma.py: seed 003's own order (one on-device baseline, each change
#          on top of it, the stacked variant), then the stacked run under --xplane;
#   xplane only that stacked run, three profiled passes (the first one pays for the profiler's start);
#   run12b spectrace run --base gemma-3-12b --draft gemma-3-1b (device scoring, 10741-token prompt);
#   hf     engines.bench.base on gemma-3-1b against transformers' Gemma3ForCausalLM (sdpa), 10741 tokens.
set -euo pipefail
. scripts/device_env.sh  # the wheels, and the checkout importable as spectrace
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-refs}
PROMPT_LEN=${PROMPT_LEN:-64}
GEN_LEN=${GEN_LEN:-128}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for step in $STEPS; do case $step in
refs) python3 scripts/make_gemma_reference.py --out "$OUT/gemma_reference.npz" 2>&1 | tee "$OUT/refs.txt" ;;
check) python3 - <<'PY' 2>&1 | tee "$OUT/check.txt"
import numpy as np
from spectrace.engines.base import BaseEngine
e = BaseEngine.from_pretrained("gemma-3-1b", prefill_seq_len=512, ctx_len=2048)
ids = np.random.default_rng(0).integers(3, 2000, 1300).astype(np.int32)
chunked = e.prefill_from_ids(ids, np.arange(1300, dtype=np.int32)).logits        # 3 chunks: cuDNN + bands
ref = e.forward_logits(ids)[-1]                                                    # masked, no cache
rel = np.abs(chunked - ref).max() / np.abs(ref).max()
print(f"gemma-3-1b bf16 chunked vs masked reference (1300 tokens, 3 chunks of 512, window 512): "
      f"max rel err {rel:.4f}, top-1 equal {int(chunked.argmax()) == int(ref.argmax())}")
PY
;;
run) python3 -m spectrace.tracer.cli run --base gemma-3-4b --draft gemma-3-1b --prompt-len "${RUN_PROMPT_LEN:-10741}" \
       --scoring device --prefill-seq-len "${PSL:-16384}" --gen-len 16 --out "$OUT/run_gemma" 2>&1 | tee "$OUT/run_gemma.txt" ;;
bench) python3 -m spectrace.tracer.cli bench --set seed003 --base gemma-3-1b --prompt-len "$PROMPT_LEN" \
       --gen-len "$GEN_LEN" --runs 5 --out "$OUT/bench_seed003" 2>&1 | tee "$OUT/bench_seed003.txt" ;;
seed) python3 scripts/bench_seed003_gemma.py --prompt-len "$PROMPT_LEN" --gen-len "$GEN_LEN" --runs 5 \
       --out "$OUT/seed003_gemma" 2>&1 | tee "$OUT/seed003_gemma.txt" ;;
xplane) python3 scripts/bench_seed003_gemma.py --xplane-only --xplane-passes 3 --prompt-len "$PROMPT_LEN" \
       --gen-len "$GEN_LEN" --out "$OUT/seed003_xplane" 2>&1 | tee "$OUT/seed003_xplane.txt" ;;
run12b) python3 -m spectrace.tracer.cli run --base gemma-3-12b --draft gemma-3-1b --prompt-len "${RUN_PROMPT_LEN:-10741}" \
       --scoring device --prefill-seq-len "${PSL:-16384}" --gen-len 16 --out "$OUT/run_gemma12b" 2>&1 | tee "$OUT/run_gemma12b.txt" ;;
hf) python3 -m spectrace.engines.bench.base --preset gemma-3-1b --prompt-len 10741 --prefill-seq-len 16384 \
       --gen 64 --runs "${RUNS:-5}" 2>&1 | tee "$OUT/bench_base_gemma1b.txt" ;;
esac; done
