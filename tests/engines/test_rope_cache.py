"""A decode step's RoPE + cache write in one kernel (engines.rope_cache) writes what the XLA form writes.

On CPU the Pallas kernel runs in its interpreter; the engine test forces the kernel's path
(``rope_cache.BACKENDS``) and decodes against transformers' greedy tokens. Its speed is the
GPU's (``scripts/check_decode_kernels.py`` checks it there against the XLA form, docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import BaseEngine, rope_cache
from spectrace.engines.config import LlamaConfig
from spectrace.engines.models import common
from spectrace.engines.testing_models import REFERENCE_MODELS, reference_inputs

REFERENCE = Path(__file__).parent / "data" / "reference.npz"


@pytest.fixture
def kernel_on_cpu(kernels_on_cpu):
    kernels_on_cpu(rope_cache)


@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 1e-6), (jnp.bfloat16, 0.0)])
@pytest.mark.parametrize("B,R,N,K,H", [(1, 1, 4, 4, 32), (2, 2, 8, 2, 64), (1, 2, 16, 1, 128)])
# 40: past the end, clamped as dynamic_update_slice clamps (the interpreter's store clamps too: what
# this guards on CPU is the result, the kernel's own clamp matters on a GPU)
@pytest.mark.parametrize("slot", [11, 23, 40])
def test_matches_the_xla_form(dtype, atol, B, R, N, K, H, slot):
    rng = np.random.default_rng(B * 100 + N + K + H)
    S = 24
    qkv = jnp.asarray(rng.standard_normal((B, R, (N + 2 * K) * H)) * 2, dtype)
    rope = common.rope_tables(jnp.asarray(rng.integers(0, 5000, (B, 1)), jnp.int32),
                              common.rope_inv_freq(H, 500000.0))
    ck, cv = (jnp.asarray(rng.standard_normal((B, S, K, H)), dtype) for _ in range(2))
    want_q, want_k, want_v = (np.asarray(a, np.float32) for a in rope_cache.xla_rope_write(qkv, rope, ck, cv, jnp.int32(slot), n_heads=N, n_kv_heads=K))
    q, ck2, cv2 = rope_cache.rope_write(qkv, rope, ck, cv, jnp.int32(slot), n_heads=N, n_kv_heads=K)
    assert q.shape == (B, 1, N, H) and q.dtype == dtype and ck2.shape == ck.shape
    np.testing.assert_allclose(np.asarray(q, np.float32), want_q, atol=atol, rtol=0)
    np.testing.assert_allclose(np.asarray(ck2, np.float32), want_k, atol=atol, rtol=0)  # every other slot as it was
    np.testing.assert_array_equal(np.asarray(cv2, np.float32), want_v)


def test_only_power_of_two_heads_on_the_kernels_backends_take_it(monkeypatch):
    def cfg(N, K, H):
        return LlamaConfig(vocab_size=64, dim=64, n_layers=1, n_heads=N, n_kv_heads=K, head_dim=H, ffn_dim=64)

    cache = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    monkeypatch.setattr(rope_cache, "BACKENDS", ["cpu", "gpu"])
    assert rope_cache.supported(cfg(8, 2, 64), cache)
    assert not rope_cache.supported(cfg(6, 2, 64), cache)                         # 6 query heads: not a Triton block
    assert not rope_cache.supported(cfg(8, 2, 24), jnp.zeros((1, 8, 2, 24)))      # head size 24
    monkeypatch.setattr(rope_cache, "BACKENDS", ["gpu"])
    assert rope_cache.supported(cfg(8, 2, 64), cache) == (jax.default_backend() == "gpu")


@pytest.mark.parametrize("name", [n for n, (cfg, _) in sorted(REFERENCE_MODELS.items())
                                  if isinstance(cfg, LlamaConfig) and cfg.head_dim >= 32])
def test_the_kernels_decode_matches_transformers(kernel_on_cpu, monkeypatch, reference_models, name):
    """Greedy decode with every step's RoPE and cache write in the kernel gives transformers'
    tokens, and the kernel really was traced into the decode program."""
    calls = []
    kernel = rope_cache.rope_write
    monkeypatch.setattr(rope_cache, "rope_write", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    ref = dict(np.load(REFERENCE))
    cfg, seed = REFERENCE_MODELS[name]
    ids = reference_inputs(cfg, seed)["ids"]
    engine = BaseEngine.from_pretrained(reference_models[name], prefill_seq_len=16, ctx_len=64)
    assert rope_cache.supported(cfg, jnp.zeros((1, 64, cfg.n_kv_heads, cfg.head_dim)))
    greedy = ref[f"{name}/greedy"]
    tokens = engine.decode(engine.prefill_from_ids(ids, np.arange(len(ids))), len(greedy)).tokens
    np.testing.assert_array_equal(tokens, greedy)
    assert len(calls) >= cfg.n_layers  # one per layer of the traced decode step
