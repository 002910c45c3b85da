"""The fused residual add + RMSNorm (engines.fused_norm) computes what the XLA form computes.

On CPU the Pallas kernel runs in its interpreter (the same program, row by row); the engine
tests force the kernel's path (``fused_norm.BACKENDS``) and compare against transformers'
logits and against the XLA form. Its speed is the GPU's (scripts/check_fused_norm.py).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import rel_err

from spectrace.engines import BaseEngine, fused_norm
from spectrace.engines.fused_norm import Residual
from spectrace.engines.testing_models import REFERENCE_MODELS, reference_inputs

REFERENCE = Path(__file__).parent / "data" / "reference.npz"


@pytest.fixture
def kernel_on_cpu(kernels_on_cpu):
    kernels_on_cpu(fused_norm)


def _rows(rng, shape, dtype):
    return jnp.asarray(rng.standard_normal(shape) * 3, dtype)


@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 2e-6), (jnp.bfloat16, 0.02)])
@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 5, 128)])
def test_add_and_norm_match_the_xla_form(kernel_on_cpu, dtype, atol, shape):
    rng = np.random.default_rng(shape[-1])
    x, d = _rows(rng, shape, dtype), _rows(rng, shape, dtype)
    w = jnp.asarray(1 + 0.1 * rng.standard_normal(shape[-1]), dtype)
    s, h = fused_norm.add_rms_norm(Residual(x, d), w, 1e-5)
    want_s = x + d
    np.testing.assert_array_equal(np.asarray(s, np.float32), np.asarray(want_s, np.float32))  # the add is exact
    want_h = fused_norm.xla_rms_norm(want_s, w, 1e-5)
    assert s.shape == h.shape == shape and h.dtype == dtype
    np.testing.assert_allclose(np.asarray(h, np.float32), np.asarray(want_h, np.float32), atol=atol, rtol=1e-5)
    # No residual pending (the embeddings before layer 0): the stream comes back as it was.
    s0, h0 = fused_norm.add_rms_norm(x, w, 1e-5)
    assert s0 is x
    np.testing.assert_allclose(np.asarray(h0, np.float32), np.asarray(fused_norm.xla_rms_norm(x, w, 1e-5), np.float32),
                               atol=atol, rtol=1e-5)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_doubled_row_comes_in_and_goes_out_without_xla_copies(kernels_on_cpu, kernel):
    """A decode step's one row, doubled for the two-row GEMMs (models.common.gemm_rows): the
    branch's row 0 is added (row 1, whatever it holds, is not), and ``copies=2`` writes h twice;
    kernel and XLA form alike."""
    if kernel:
        kernels_on_cpu(fused_norm)
    rng = np.random.default_rng(7)
    x, d = _rows(rng, (2, 1, 64), jnp.float32), _rows(rng, (2, 2, 64), jnp.float32)
    w = jnp.asarray(1 + 0.1 * rng.standard_normal(64), jnp.float32)
    s, h = fused_norm.add_rms_norm(Residual(x, d), w, 1e-5, copies=2)
    np.testing.assert_array_equal(np.asarray(s), np.asarray(x + d[:, :1]))
    want = np.asarray(fused_norm.xla_rms_norm(x + d[:, :1], w, 1e-5))           # [2, 1, 64]
    assert s.shape == (2, 1, 64) and h.shape == (2, 2, 64)
    np.testing.assert_allclose(np.asarray(h), np.concatenate([want, want], axis=1), atol=2e-6, rtol=1e-5)
    s1, h1 = fused_norm.add_rms_norm(Residual(x, d), w, 1e-5)                    # one copy: [2, 1, 64]
    np.testing.assert_allclose(np.asarray(h1), want, atol=2e-6, rtol=1e-5)
    _, h0 = fused_norm.add_rms_norm(x, w, 1e-5, copies=2)                        # no residual pending
    assert h0.shape == (2, 2, 64)
    np.testing.assert_array_equal(np.asarray(h0[:, 0]), np.asarray(h0[:, 1]))
    with pytest.raises(ValueError, match=r"copies=2: only a single row \(T = 1\) is repeated"):
        fused_norm.add_rms_norm(jnp.zeros((1, 3, 64)), w, 1e-5, copies=2)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_layer_finishes_alike_from_a_doubled_attention_row(kernels_on_cpu, kernel):
    """Llama's ``finish`` given a decode step's attention row twice ([B, 2, N, H], as the GPU's
    decode attention writes it for the two-row out projection) returns what it returns from the
    one row: the doubled product reaches the norm, never the stream."""
    from spectrace.engines.models import common, llama

    if kernel:
        kernels_on_cpu(fused_norm)
    rng = np.random.default_rng(3)
    B, N, H, D, F = 2, 4, 16, 64, 96
    lp = {name: jnp.asarray(rng.standard_normal(shape) * 0.1, jnp.float32) for name, shape in
          (("wo", (N, H, D)), ("w_gate_up", (D, 2 * F)), ("w_down", (F, D)))}
    lp["mlp_norm"] = jnp.asarray(1 + 0.1 * rng.standard_normal(D), jnp.float32)
    cfg = type("Cfg", (), {"rms_eps": 1e-5})()
    x, attn = _rows(rng, (B, 1, D), jnp.float32), _rows(rng, (B, 1, N, H), jnp.float32)
    one = llama.finish(lp, x, attn, cfg)
    two = llama.finish(lp, x, jnp.concatenate([attn, attn], axis=1), cfg)
    assert common.out_proj_rows(lp, jnp.concatenate([attn, attn], axis=1)).shape == (B, 2, D)
    for a, b in zip(one, two):  # the stream and the MLP's branch, both [B, 1, D]
        assert a.shape == b.shape == (B, 1, D)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6)


def test_only_power_of_two_rows_on_the_kernels_backends_take_it(kernel_on_cpu, monkeypatch):
    x = jnp.zeros((1, 3, 64), jnp.float32)
    assert fused_norm.supported(x, jnp.ones(64, jnp.float32))
    assert not fused_norm.supported(jnp.zeros((1, 3, 48), jnp.float32), jnp.ones(48, jnp.float32))  # Triton blocks
    assert not fused_norm.supported(x, jnp.ones(64, jnp.bfloat16))                  # mixed dtypes: the XLA form
    monkeypatch.setattr(fused_norm, "BACKENDS", ["gpu"])
    assert fused_norm.supported(x, jnp.ones(64, jnp.float32)) == (jax.default_backend() == "gpu")


def test_an_unfused_row_size_still_adds_the_residual():
    x, d = jnp.ones((1, 2, 48)), jnp.full((1, 2, 48), 2.0)
    s, h = fused_norm.add_rms_norm(Residual(x, d), jnp.ones(48), 1e-6)
    np.testing.assert_array_equal(np.asarray(s), 3.0)
    np.testing.assert_allclose(np.asarray(h), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", [n for n, (cfg, _) in sorted(REFERENCE_MODELS.items()) if cfg.dim & (cfg.dim - 1) == 0])
def test_the_kernels_engine_matches_transformers(kernel_on_cpu, reference_models, name):
    """Prefill, the full forward and greedy decode with every norm in the kernel, against the
    logits and tokens transformers computed (test_reference's bound, 1e-4 relative)."""
    ref = dict(np.load(REFERENCE))
    cfg, seed = REFERENCE_MODELS[name]
    inputs = reference_inputs(cfg, seed)
    engine = BaseEngine.from_pretrained(reference_models[name], prefill_seq_len=16, ctx_len=64)
    lowered = jax.jit(lambda x, w: fused_norm.add_rms_norm(x, w, 1e-5)).lower(
        Residual(jnp.zeros((1, 2, cfg.dim)), jnp.zeros((1, 2, cfg.dim))), jnp.ones(cfg.dim)).as_text()
    assert "stablehlo.while" in lowered  # the kernel's path: the interpreter's loop over rows
    n = len(inputs["ids"])
    result = engine.prefill_from_ids(inputs["ids"], np.arange(n))
    assert rel_err(result.logits, ref[f"{name}/logits"][-1]) <= 1e-4
    assert rel_err(engine.forward_logits(inputs["ids"]), ref[f"{name}/logits"]) <= 1e-4
    greedy = ref[f"{name}/greedy"]
    tokens = engine.decode(engine.prefill_from_ids(inputs["ids"], np.arange(n)), len(greedy)).tokens
    np.testing.assert_array_equal(tokens, greedy)


@pytest.mark.parametrize("rows,M,used", [(4, 12, 4), (4, 6, 2), (8, 5, 1), (1, 8, 1)])
def test_several_rows_per_program_give_the_same_rows(kernel_on_cpu, rows, M, used):
    """A program may take several rows (a prefill chunk's count is a multiple of 128); the count
    halves until it divides the rows, and every row is normalised on its own."""
    rng = np.random.default_rng(M)
    x, d = _rows(rng, (1, M, 64), jnp.float32), _rows(rng, (1, M, 64), jnp.float32)
    w = jnp.asarray(1 + 0.1 * rng.standard_normal(64), jnp.float32)
    assert fused_norm._block_rows(M, rows) == used
    s, h = fused_norm._fused(x, d, w, eps=1e-5, rows=rows)
    np.testing.assert_array_equal(np.asarray(s), np.asarray(x + d))
    np.testing.assert_allclose(np.asarray(h), np.asarray(fused_norm.xla_rms_norm(x + d, w, 1e-5)), atol=2e-6, rtol=1e-5)
