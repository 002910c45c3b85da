#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into .whl/ (git-ignored), for the device tool's
# `carry`. The GPU image has jax, torch, transformers, numpy, protobuf and grpcio, but no
# OpenTelemetry, no perfetto and no tiktoken. Pinned to the versions this project is tested with.
# On the GPU machine: `. scripts/device_env.sh` installs them and makes the checkout importable.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PKGS=(
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
  opentelemetry-proto==1.45.2 opentelemetry-exporter-otlp==1.45.2
  opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2
  opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-http-transport==0.66b2 googleapis-common-protos==1.76.0 perfetto==0.59.1
  opentelemetry-exporter-prometheus==0.66b2 prometheus-client==0.26.0
  absl-py==2.5.1  # jax.experimental.pallas.ops.gpu.attention_mgpu imports jax._src.test_util, which needs it
  tiktoken==0.14.0  # engines.tiktoken_bpe (without it the engines fall back to tokenizers, slower)
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "${PKGS[@]}"
ls .whl
