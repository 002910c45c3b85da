"""The few-row projection kernel (engines.gemv) computes XLA's product.

On CPU the Pallas kernel runs in its interpreter. Its speed is the GPU's
(``scripts/check_gemv.py`` times it there against XLA's dot, docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import BaseEngine, gemv
from spectrace.engines.models import common
from spectrace.engines.params import init_params
from spectrace.engines.testing_models import GEMMA_REFERENCE_MODELS, REFERENCE_MODELS, reference_inputs

REFERENCE = Path(__file__).parent / "data" / "reference.npz"


@pytest.mark.parametrize("M,K,N,block_n,block_k", [(1, 256, 64, 16, 128), (2, 512, 96, 32, 256),
                                                    (8, 384, 64, 64, 128)])
@pytest.mark.parametrize("deferred", [False, True])
def test_matches_a_float32_product(M, K, N, block_n, block_k, deferred):
    rng = np.random.default_rng(M * 1000 + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((K, N)) * K ** -0.5).astype(np.float32)
    # float32 in: the kernel's float32 sum differs from numpy's only by its summation order
    got = gemv.matmul(jnp.asarray(x), jnp.asarray(w), block_n=block_n, block_k=block_k, deferred=deferred)
    np.testing.assert_allclose(np.asarray(got), x @ w, rtol=1e-5, atol=1e-5)
    # bfloat16 in and out: within one rounding of the bf16 output of the float32 product (as XLA's dot)
    xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    got = np.asarray(gemv.matmul(xb, wb, block_n=block_n, block_k=block_k, deferred=deferred).astype(jnp.float32))
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
    assert not gemv.supported(jnp.zeros((2, 512)), jnp.zeros((512, 64), jnp.float32), 64, 512, 3)  # 384 KB of tiles
    monkeypatch.setattr(gemv, "BACKENDS", [])
    assert not gemv.supported(jnp.zeros((2, 512)), w, 32, 256)      # off unless named
    with pytest.raises(ValueError, match="the blocks must divide N and K"):
        gemv.matmul(jnp.zeros((1, 512)), jnp.zeros((512, 48)), block_n=32, block_k=256)


def test_blocks_setting():
    assert gemv.blocks("32,256,4,3") == (32, 256, 4, 3, False)
    assert gemv.blocks("16/512/8/2/1") == (16, 512, 8, 2, True)
    for bad in ("32,256,4", "32,250,4,3", "32,256,4,0", "32,256,4,3,2", "a,256,4,3"):
        with pytest.raises(ValueError, match="SPECTRACE_GEMV_BLOCKS="):
            gemv.blocks(bad)


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_the_kernels_decode_matches_transformers(kernels_on_cpu, monkeypatch, reference_models, name):
    """Greedy decode (float32) with every decode step's projections in the kernel gives transformers'
    tokens, and the kernel really was traced into the decode program: four a layer (QKV, output,
    gate|up, down). A prefill chunk takes it only for its last layer's one row (output, gate|up, down)."""
    kernels_on_cpu(gemv)
    monkeypatch.setattr(gemv, "DEFAULT", (16, 16, None, None, False))  # blocks dividing the small models' widths
    calls = []
    kernel = gemv.matmul
    monkeypatch.setattr(gemv, "matmul", lambda *a, **kw: calls.append(a[0].shape) or kernel(*a, **kw))
    ref = dict(np.load(REFERENCE))
    cfg, seed = REFERENCE_MODELS[name]
    ids = reference_inputs(cfg, seed)["ids"]
    engine = BaseEngine.from_pretrained(reference_models[name], prefill_seq_len=16, ctx_len=64)
    pre = engine.prefill_from_ids(ids, np.arange(len(ids)))
    assert calls and len(calls) % 3 == 0  # three a traced chunk program
    calls.clear()
    greedy = ref[f"{name}/greedy"]
    np.testing.assert_array_equal(engine.decode(pre, len(greedy)).tokens, greedy)
    assert calls and len(calls) % (4 * cfg.n_layers) == 0 and all(shape[0] == 1 for shape in calls)


@pytest.mark.parametrize("name", sorted(GEMMA_REFERENCE_MODELS))
def test_gemma_decodes_the_same_tokens_with_the_kernel(kernels_on_cpu, monkeypatch, name):
    """Gemma's output projection and MLP take the kernel too (its QKV where fused): float32 greedy
    decode gives the XLA path's tokens and logits."""
    cfg = GEMMA_REFERENCE_MODELS[name][0]
    params = init_params(cfg, 5, np.float32, jax.devices()[0])
    ids = np.random.default_rng(3).integers(3, cfg.vocab_size, 21).astype(np.int32)

    def run():
        engine = BaseEngine(cfg, params, None, prefill_seq_len=8, ctx_len=64, device=jax.devices()[0])
        pre = engine.prefill_from_ids(ids, np.arange(len(ids)))
        return pre.logits, engine.decode(pre, 12).tokens

    want_logits, want = run()
    kernels_on_cpu(gemv)
    monkeypatch.setattr(gemv, "DEFAULT", (16, 16, None, None, False))
    calls = []
    kernel = gemv.matmul
    monkeypatch.setattr(gemv, "matmul", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    got_logits, got = run()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    assert len(calls) >= 3 * cfg.n_layers


@pytest.mark.parametrize("case", ["separate projections", "three rows", "two positions"])
def test_the_kernel_stays_out(kernels_on_cpu, monkeypatch, case):
    """Separate projections (a mesh engine's layout), a batch that is not a power of two and more
    than one position keep XLA's dot."""
    kernels_on_cpu(gemv)
    monkeypatch.setattr(gemv, "DEFAULT", (16, 16, None, None, False))
    calls = []
    monkeypatch.setattr(gemv, "matmul", lambda *a, **kw: calls.append(1))
    B, T = {"separate projections": (1, 1), "three rows": (3, 1), "two positions": (1, 2)}[case]
    D, N, H, F = 32, 2, 16, 64
    lp = {"wo": jnp.ones((N, H, D)), "w_down": jnp.ones((F, D))}
    lp.update({"w_gate": jnp.ones((D, F)), "w_up": jnp.ones((D, F))} if case == "separate projections" else
              {"wqkv": jnp.ones((D, 3 * N * H)), "w_gate_up": jnp.ones((D, 2 * F))})
    x, attn = jnp.ones((B, T, D)), jnp.ones((B, T, N, H))
    assert common.out_proj(lp, attn).shape == (B, T, D)
    assert common.gated_mlp(lp, x, jax.nn.silu).shape == (B, T, D)
    if "wqkv" in lp:
        assert common.fused_qkv(lp, x).shape == (B, T, 3 * N * H)
    assert calls == []
