#!/usr/bin/env bash
# Session 11's GPU runs (issue 19), results under $OUT; carry [".whl", ".bench_before", ".bench_after"],
# each tree made by `git archive COMMIT tracer engines | tar -x -C DIR` (git-ignored):
# .bench_before 2e5f67b (session 10's tree), .bench_after the commit measured (the pruned base
# chunk queued behind device scoring, engines/speculative/handover.py). The checkout's own
# tracer/ and engines/ are replaced by .bench_after's first, so what runs is exactly that commit
# (the working copy may hold someone's unfinished edits), except with step 4, which needs the
# checkout's C sources of the tracer.
#   1. scripts/bench_variants.py, 8B/1B pipeline, 64-token decode: before against after, and after with the
#      draft's chunks on cuBLAS too (Triton GEMMs off, as the base's), round-robin (N, default 20);
#   2. engines.bench.spec and engines.bench.base against transformers (RUNS, default 5; gpu_perf.sh steps 2 and 1);
#   3. spectrace run --xplane of the pair with device scoring (device time and idle gaps per span);
#   4. recording on vs off (scripts/bench_recording.py --n 40, alternating) on the pure-Python path, then
#      the same with the tracer's C span path built by hand with gcc (the image has no build backend
#      offline), and bench_overhead.py on that host's Python 3.12;
#   5. scripts/check_handover.py: the queued pruned chunk's logits against the reference forward.
# STEPS picks steps (default "1").
set -euo pipefail
STEPS=${STEPS:-1}
case " $STEPS " in *" 4 "*) ;; *) rm -rf tracer engines && cp -r .bench_after/tracer .bench_after/engines . ;; esac
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PAIR=(--base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 16384)
for step in $STEPS; do case $step in
1) python3 scripts/bench_variants.py "${PAIR[@]}" --gen-len 64 --n "${N:-20}" --variant before=.bench_before \
       --variant after=. \
       --variant "draft-cublas=.,SPECTRACE_CHUNK_XLA=base:xla_gpu_enable_command_buffer=;base:xla_gpu_enable_triton_gemm=false;spec:xla_gpu_enable_triton_gemm=false" \
       --out "$OUT" 2>&1 | grep -v Warning | grep -v "^[WIE][0-9]" | tee "$OUT/bench_variants_s11.txt"
   mv "$OUT/bench_variants.json" "$OUT/bench_variants_s11.json" ;;
2) STEPS="2 1" RUNS=${RUNS:-5} bash scripts/gpu_perf.sh ;;
3) python3 -m spectrace.tracer.cli run "${PAIR[@]}" --scoring device --gen-len 16 --xplane --out /tmp/run8b_xplane \
       2>&1 | grep -v "^[WIE][0-9]" | tee "$OUT/run8b_xplane.txt"
   cp /tmp/run8b_xplane/ttft.json "$OUT/run8b_xplane_ttft.json" ;;
4) SPECTRACE_PURE_PYTHON=1 python3 scripts/bench_recording.py "${PAIR[@]}" --n 40 --out "$OUT" 2>&1 \
       | grep -v "^[WIE][0-9]" | tee "$OUT/bench_recording.txt"
   INC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
   SUF=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
   gcc -shared -fPIC -O2 -I"$INC" tracer/_speedups.c tracer/_speedups_span.c tracer/_speedups_types.c tracer/_speedups_methods.c \
       -o "tracer/_speedups$SUF"
   python3 -c "from spectrace.tracer import _accel; print('accelerated', _accel.ACCELERATED)"
   mkdir -p "$OUT/c" && python3 scripts/bench_recording.py "${PAIR[@]}" --n 40 --out "$OUT/c" 2>&1 \
       | grep -v "^[WIE][0-9]" | tee "$OUT/bench_recording_c.txt"
   mv "$OUT/c/bench_recording.json" "$OUT/bench_recording_c.json" && rmdir "$OUT/c"
   python3 scripts/bench_overhead.py --n 50000 --repeats 5 2>&1 | tee "$OUT/bench_overhead_py312.txt" ;;
5) python3 scripts/check_handover.py 2>&1 | grep -v "^[WIE][0-9]" | tee "$OUT/check_handover.txt" ;;
esac; done
