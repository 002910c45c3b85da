"""The few-row projection kernel (engines.gemv) computes XLA's product.

On CPU the Pallas kernel runs in its interpreter. Its speed is the GPU's
(``scripts/check_gemv.py`` times it there against XLA's dot, docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import BaseEngine, gemv
from spectrace.engines.testing_models import REFERENCE_MODELS, reference_inputs

REFERENCE = Path(__file__).parent / "data" / "reference.npz"


@pytest.mark.parametrize("M,K,N,block_n,block_k", [(1, 256, 64, 16, 128), (2, 512, 96, 32, 256),
                                                    (8, 384, 64, 64, 128)])
def test_matches_a_float32_product(M, K, N, block_n, block_k):
    rng = np.random.default_rng(M * 1000 + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((K, N)) * K ** -0.5).astype(np.float32)
    # float32 in: the kernel's float32 sum differs from numpy's only by its summation order
    got = gemv.matmul(jnp.asarray(x), jnp.asarray(w), block_n=block_n, block_k=block_k)
    np.testing.assert_allclose(np.asarray(got), x @ w, rtol=1e-5, atol=1e-5)
    # bfloat16 in and out: within one rounding of the bf16 output of the float32 product (as XLA's dot)
    xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    got = np.asarray(gemv.matmul(xb, wb, block_n=block_n, block_k=block_k).astype(jnp.float32))
    want = np.asarray(xb.astype(jnp.float32)) @ np.asarray(wb.astype(jnp.float32))
    np.testing.assert_allclose(got, want, rtol=2 ** -8, atol=1e-6)
    assert got.dtype == np.float32 and gemv.matmul(xb, wb, block_n=block_n, block_k=block_k).dtype == jnp.bfloat16


def test_supported_needs_dividing_blocks_and_few_rows(monkeypatch):
    monkeypatch.setattr(gemv, "BACKENDS", ["cpu", "gpu"])
    w = jnp.zeros((512, 64))
    assert gemv.supported(jnp.zeros((2, 512)), w, 32, 256)
    assert not gemv.supported(jnp.zeros((3, 512)), w, 32, 256)     # 3 rows: not a power of two
    assert not gemv.supported(jnp.zeros((2, 512)), w, 48, 256)     # 48 does not divide 64
    assert not gemv.supported(jnp.zeros((2, 384)), jnp.zeros((384, 64)), 32, 256)
    monkeypatch.setattr(gemv, "BACKENDS", [])
    assert not gemv.supported(jnp.zeros((2, 512)), w, 32, 256)      # off unless named


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_the_kernels_decode_matches_transformers(kernels_on_cpu, monkeypatch, reference_models, name):
    """Greedy decode (float32) with every decode step's projections in the kernel gives transformers'
    tokens, and the kernel really was traced into the decode program: four a layer (QKV, output,
    gate|up, down). A prefill chunk takes it only for its last layer's one row (output, gate|up, down)."""
    kernels_on_cpu(gemv)
    monkeypatch.setattr(gemv, "DEFAULT", (16, 16, None, None))  # blocks dividing the small models' widths
    calls = []
    kernel = gemv.matmul
    monkeypatch.setattr(gemv, "matmul", lambda *a, **kw: calls.append(a[0].shape) or kernel(*a, **kw))
    ref = dict(np.load(REFERENCE))
    cfg, seed = REFERENCE_MODELS[name]
    ids = reference_inputs(cfg, seed)["ids"]
    engine = BaseEngine.from_pretrained(reference_models[name], prefill_seq_len=16, ctx_len=64)
    pre = engine.prefill_from_ids(ids, np.arange(len(ids)))
    traced = len(calls)  # three a traced chunk program
    assert traced and traced % 3 == 0
    greedy = ref[f"{name}/greedy"]
    np.testing.assert_array_equal(engine.decode(pre, len(greedy)).tokens, greedy)
    assert len(calls) - traced >= 4 * cfg.n_layers and all(shape[0] == 1 for shape in calls)
