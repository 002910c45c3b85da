"""The Pallas decode attention (engines.decode_attention) computes what attention.masked computes.

On CPU the kernel runs in Pallas's interpreter: the same program, block by block, so the block
loop, the position mask and the merge across blocks are checked here; its speed is the GPU's
(scripts/check_decode_attention.py, docs/evidence/h200-session8).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import attention, decode_attention


def _case(rng, S, K, G, H, filled, gaps=False):
    q = jnp.asarray(rng.standard_normal((1, 1, K * G, H)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1, S, K, H)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((1, S, K, H)), jnp.float32)
    kp = np.full((1, S), -1, np.int32)
    kp[0, :filled] = np.arange(filled) * (3 if gaps else 1)   # a pruned prompt keeps gapped positions
    return q, k, v, jnp.asarray(kp)


@pytest.mark.parametrize("block,per", [(128, None), (64, 128), (128, 128)])
@pytest.mark.parametrize("gaps", [False, True])
def test_matches_the_masked_form(block, per, gaps):
    rng = np.random.default_rng(block + bool(gaps))
    S, K, G, H, filled = 512, 2, 4, 64, 300
    q, k, v, kp = _case(rng, S, K, G, H, filled, gaps)
    last = int(kp[0, filled - 1])
    for q_pos in (last + 1, last // 2, 0):  # the next token; a query that sees only part; only slot 0
        qp = jnp.asarray([[q_pos]], jnp.int32)
        want = attention.masked(q, k, v, qp, kp)
        got = decode_attention.attend(q, k, v, qp, kp, scale=H ** -0.5, block=block, per=per)
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6, rtol=1e-5)


def test_blocks_with_no_visible_slot_weigh_nothing():
    """Every block past the filled ones is all padding (position -1): the merge must ignore them."""
    rng = np.random.default_rng(7)
    q, k, v, kp = _case(rng, 1024, 1, 2, 64, 5)
    qp = jnp.asarray([[5]], jnp.int32)
    got = decode_attention.attend(q, k, v, qp, kp, scale=0.125)
    np.testing.assert_allclose(np.asarray(got), np.asarray(attention.masked(q, k, v, qp, kp)), atol=2e-6)


def test_only_gpu_decode_steps_of_full_layers_take_it():
    q = jnp.zeros((1, 1, 8, 64), jnp.bfloat16)
    k = jnp.zeros((1, 512, 2, 64), jnp.bfloat16)
    on_gpu = jax.default_backend() == "gpu"
    assert decode_attention.supported(q, k, attention.FULL) == on_gpu   # the CPU engines keep the XLA form
    assert not decode_attention.supported(q, k, attention.AttnSpec(window=64))
    assert not decode_attention.supported(q, k, attention.AttnSpec(softcap=50.0))
    assert not decode_attention.supported(jnp.zeros((1, 2, 8, 64), jnp.bfloat16), k, attention.FULL)
    assert not decode_attention.supported(q, jnp.zeros((1, 500, 2, 64), jnp.bfloat16), attention.FULL)


@pytest.mark.parametrize("K,G,H", [(8, 4, 64), (4, 4, 128), (2, 8, 64), (1, 16, 64), (3, 3, 64)])
def test_shared_query_tiles_pick_each_heads_rows(K, G, H):
    """When G divides the 16-row tile, 16/G KV heads share one tile of q (no pad): each program must
    still score only its own head's G rows, so the shared and the padded layouts agree with the
    masked form; G = 3 cannot share and pads either way."""
    rng = np.random.default_rng(K * 100 + G)
    q, k, v, kp = _case(rng, 256, K, G, H, 200)
    assert decode_attention._shares_tiles(K, G) == (16 % G == 0 and (K * G) % 16 == 0)
    qp = jnp.asarray([[199]], jnp.int32)
    want = np.asarray(attention.masked(q, k, v, qp, kp))
    for pad in (None, True):
        got = decode_attention.attend(q, k, v, qp, kp, scale=H ** -0.5, pad=pad)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("per,G", [(128, 8), (128, 4), (256, 16)])
def test_the_pallas_combine_matches_xlas_merge(monkeypatch, per, G):
    """The ranges merged in the Pallas combine (partials padded to whole steps, the padding never
    written: the interpreter fills it with NaN) against XLA's merge and the masked form: with
    16-range steps (set here), 19 ranges are two steps, the second mostly padding. The query sees
    every range (so the second step rescales what the first summed) or only the first 13."""
    monkeypatch.setattr(decode_attention, "COMBINE_CHUNK", 16)
    jax.clear_caches()  # attend reads COMBINE_CHUNK when traced
    rng = np.random.default_rng(per + G)
    S, K, H = per * 19, 16 // G * 2, 64
    q, k, v, kp = _case(rng, S, K, G, H, S)
    assert decode_attention._shares_tiles(K, G) and decode_attention.combine_supported(G)
    for q_pos in (per * 18 + 5, per * 12):
        qp = jnp.asarray([[q_pos]], jnp.int32)
        want = np.asarray(attention.masked(q, k, v, qp, kp))
        for combine in (True, False):
            got = decode_attention.attend(q, k, v, qp, kp, scale=H ** -0.5, per=per, combine=combine)
            np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=1e-5)
        # The combine writes the row twice when asked (the out projection's two-row GEMM)
        got = np.asarray(decode_attention.attend(q, k, v, qp, kp, scale=H ** -0.5, per=per, combine=True, copies=2))
        assert got.shape == (1, 2) + want.shape[2:]
        np.testing.assert_allclose(got, np.concatenate([want, want], axis=1), atol=2e-6, rtol=1e-5)
    jax.clear_caches()


def test_the_decode_kernels_are_named_in_the_environment():
    """``$SPECTRACE_DECODE_KERNELS`` names the kernels in use; unset, both are (the measured default)."""
    assert decode_attention.decode_kernels("rope+combine") == {"rope", "combine"}
    assert decode_attention.decode_kernels("rope, combine") == {"rope", "combine"}
    assert decode_attention.decode_kernels("") == decode_attention.decode_kernels("none") == frozenset()
    with pytest.raises(ValueError, match=r"SPECTRACE_DECODE_KERNELS='rope\+combin': unknown kernel 'combin'"):
        decode_attention.decode_kernels("rope+combin")
    probe = "from spectrace.engines import decode_attention as d, rope_cache as r; print(d.COMBINE, r.BACKENDS)"
    env = {k: v for k, v in os.environ.items() if k != "SPECTRACE_DECODE_KERNELS"}
    for value, want in ((None, "True ['gpu']"), ("none", "False []"), ("rope+combine", "True ['gpu']"),
                        ("combine", "True []"), ("rope", "False ['gpu']")):
        run_env = env if value is None else {**env, "SPECTRACE_DECODE_KERNELS": value}
        out = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want, (value, out.stdout, out.stderr[-400:])
