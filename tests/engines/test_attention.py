"""engines.attention's chunk attention against the position-masked reference, on CPU."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from spectrace.engines import attention

B, T, N, K, H, S = 2, 8, 6, 2, 16, 64


@pytest.mark.parametrize("start", [0, 1, T - 1, T, T + 1, 3 * T - 5, S - T])
def test_chunk_causal_equals_masked_attention_for_any_prefix_length(start):
    rng = np.random.default_rng(start)
    q = rng.standard_normal((B, T, N, H), np.float32)
    cache_k = rng.standard_normal((B, S, K, H), np.float32)
    cache_v = rng.standard_normal((B, S, K, H), np.float32)
    k, v = cache_k[:, start:start + T], cache_v[:, start:start + T]                # the chunk, already cached
    slots = np.arange(S)
    k_pos = np.broadcast_to(np.where(slots < start + T, slots, -1), (B, S)).astype(np.int32)
    q_pos = np.broadcast_to(start + np.arange(T), (B, T)).astype(np.int32)
    want = attention.masked(q, cache_k, cache_v, q_pos, k_pos)
    got = jax.jit(attention.chunk_causal)(q, k, v, cache_k, cache_v, np.int32(start))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6, rtol=1e-5)
    if start == 0:  # the fresh-cache form (no prefix call, no merge) is the same function
        fresh = jax.jit(attention.chunk_causal, static_argnames="prefix")(q, k, v, cache_k, cache_v,
                                                                          np.int32(0), prefix=False)
        np.testing.assert_allclose(np.asarray(fresh), np.asarray(want), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("start", [1, T + 3, 4 * T])
def test_prefix_loop_equals_one_masked_pass(start):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((B, T, N, H), np.float32)
    cache_k = rng.standard_normal((B, S, K, H), np.float32)
    cache_v = rng.standard_normal((B, S, K, H), np.float32)
    out, lse = attention._xla_prefix(q, cache_k, cache_v, np.int32(start))
    want_out, want_lse = attention._xla(q, cache_k, cache_v, kv_len=start)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want_out), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(want_lse), atol=2e-6, rtol=1e-6)
