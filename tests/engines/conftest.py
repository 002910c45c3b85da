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
