# Sourced by the per-session GPU scripts (gpu_session12.sh, gpu_session13.sh): the device
# environment (device_env.sh), $OUT, the GPU's name into $OUT/gpu.txt, the 8B/1B pipeline's
# arguments (PAIR) and `quiet` (drops warning and XLA log lines from a log).
. scripts/device_env.sh
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PAIR=(--base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 --prefill-seq-len 16384)
quiet() { grep -v Warning | grep -v "^[WIE][0-9]"; }
