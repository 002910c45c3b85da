"""Fixtures for the engine tests: generated checkpoints written once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spectrace_cache(tmp_path_factory):
    """A private cache dir holding the embedded default pair (never the user's ~/.cache)."""
    from spectrace.engines.defaults import default_pair

    root = tmp_path_factory.mktemp("spectrace-cache")
    default_pair(root)
    return root


@pytest.fixture(scope="session")
def reference_models(tmp_path_factory):
    """name -> checkpoint directory of every model in engines.testing_models.REFERENCE_MODELS."""
    from spectrace.engines.testing_models import REFERENCE_MODELS, write_reference_model

    root = tmp_path_factory.mktemp("reference-models")
    return {name: write_reference_model(name, root / name) for name in REFERENCE_MODELS}


@pytest.fixture(scope="session")
def gemma_reference_models(tmp_path_factory):
    """name -> checkpoint directory of every model in engines.testing_models.GEMMA_REFERENCE_MODELS."""
    from spectrace.engines.testing_models import GEMMA_REFERENCE_MODELS, write_reference_model

    root = tmp_path_factory.mktemp("gemma-reference-models")
    return {name: write_reference_model(name, root / name) for name in GEMMA_REFERENCE_MODELS}


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    """``kernels_on_cpu(module, ...)``: those modules' GPU Pallas kernels (their ``BACKENDS``) taken
    on CPU too, in Pallas's interpreter; compiled forwards are dropped before and after (they
    were traced under the XLA forms)."""
    import jax

    def on(*modules):
        for m in modules:
            monkeypatch.setattr(m, "BACKENDS", ["cpu", "gpu"])
        jax.clear_caches()

    yield on
    jax.clear_caches()


FAKE_NVIDIA_SMI = r"""#!/bin/sh
# Stands in for nvidia-smi where no GPU is (CI): answers a field probe (refusing FIELD_MISSING;
# hanging with HANG set), and with -f appends a sample every 20 ms until interrupted, as
# `-lms 20 -f FILE` does; SIGINT writes a last sample at 1005 MHz (interrupted, not killed).
out=; query=; prev=
for a in "$@"; do
  case $a in --query-gpu=*) query=${a#--query-gpu=};; esac
  [ "$prev" = -f ] && out=$a
  prev=$a
done
case $query in *"$FIELD_MISSING"*) [ -n "$FIELD_MISSING" ] && exit 6;; esac
[ -n "$HANG" ] && exec sleep 60
[ -z "$out" ] && { echo "$query"; exit 0; }
sample() { echo "$(date '+%Y/%m/%d %H:%M:%S.%N' | cut -c1-23), $1, 612.50, Active, 61" >> "$out"; }
trap 'sample 1005; exit 0' INT
while :; do
  sample 1755
  echo "[N/A], [N/A], [N/A], [N/A], [N/A]" >> "$out"
  sleep 0.02
done
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """A folder put first on PATH holding :data:`FAKE_NVIDIA_SMI` as ``nvidia-smi``: the GPU clock
    sampler's parsing and attribution run where no GPU is (the real tool needs one)."""
    import os

    folder = tmp_path / "fake-bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder
