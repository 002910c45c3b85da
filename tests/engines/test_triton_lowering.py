"""Every Pallas kernel of the engines lowers to Triton IR for a CUDA GPU, on this CPU-only machine.

The CPU tests run the kernels in Pallas's interpreter, which takes any jax primitive; the GPU's
Triton lowering takes fewer (no ``slice`` of a loaded value, for one: session 14's one-row GEMM
kernel, since removed, would have failed at its first GPU call). Here the CUDA lowering rule of ``pallas_call``
is registered by hand (a CPU jaxlib leaves it out), the backend is reported as "gpu" so the
kernels are traced un-interpreted, and each kernel is lowered for ``cuda`` at the shapes the
8B/1B decode step uses. Lowering stops at Triton IR (jaxpr -> TTIR, for compute capability
9.0); the PTX compile and the run stay the GPU's (``scripts/check_*.py``).

Uses jax's private Pallas modules (``jax._src.pallas``): if a jax release moves them this test
fails and says where to look, rather than passing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from spectrace.engines import decode_attention, fused_norm, rope_cache

S, FILLED = 11008, 10741
TRITON_CALL = "@__gpu$xla.gpu.triton("  # the custom call a Pallas Triton kernel lowers to


@pytest.fixture
def cuda_lowering(monkeypatch):
    """Lower functions for CUDA: ``lower(f, *avals)`` returns the lowered module's text."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.pallas import pallas_call
        from jax._src.pallas.triton import pallas_call_registration
    except ImportError as e:  # pragma: no cover - a jax release moved them
        pytest.fail(f"jax {jax.__version__} moved its Pallas Triton registration ({e}): update this test")
    mlir.register_lowering(pallas_call.pallas_call_p, pallas_call_registration.pallas_call_lowering,
                           platform="cuda")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the kernels' `interpret=` and gates
    jax.clear_caches()

    def lower(f, *avals, kernels: int = 1):
        text = jax.jit(f).trace(*avals).lower(lowering_platforms=("cuda",)).as_text()
        assert text.count(TRITON_CALL) == kernels, "not the kernel's path (the XLA form was traced)"
        return text

    yield lower
    jax.clear_caches()


def _avals(*specs):
    return [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in specs]


@pytest.mark.parametrize("H", [64, 128])
@pytest.mark.parametrize("combine", [True, False])
def test_decode_attention_lowers(cuda_lowering, H, combine):
    q, k, v, qp, kp = _avals(((1, 1, 32, H), jnp.bfloat16), ((1, S, 8, H), jnp.bfloat16), ((1, S, 8, H), jnp.bfloat16),
                             ((1, 1), jnp.int32), ((1, S), jnp.int32))
    cuda_lowering(functools.partial(decode_attention.attend, scale=H ** -0.5, combine=combine), q, k, v, qp, kp,
                  kernels=2 if combine else 1)


@pytest.mark.parametrize("rows", [1, 2])
def test_rope_cache_write_lowers(cuda_lowering, rows):
    N, K, H = 32, 8, 128
    qkv, cos, sin, ck, cv = _avals(((1, rows, (N + 2 * K) * H), jnp.bfloat16), ((1, 1, 1, H), jnp.float32),
                                   ((1, 1, 1, H), jnp.float32), ((1, S, K, H), jnp.bfloat16), ((1, S, K, H), jnp.bfloat16))
    cuda_lowering(lambda qkv, cos, sin, ck, cv: rope_cache.rope_write(qkv, (cos, sin), ck, cv, jnp.int32(FILLED),
                                                                      n_heads=N, n_kv_heads=K), qkv, cos, sin, ck, cv)


@pytest.mark.parametrize("T,D,R,copies", [(1, 2048, 1, 1), (1, 4096, 1, 1), (10752, 2048, 10752, 1),
                                          (1, 2048, 2, 2), (1, 2048, 2, 1), (1, 2048, 1, 2)])
def test_fused_norm_lowers(cuda_lowering, T, D, R, copies):
    # R: the branch's rows (2: a decode step's doubled row, row 0 read); copies: h's row written twice
    x, delta, w = _avals(((1, T, D), jnp.bfloat16), ((1, R, D), jnp.bfloat16), ((D,), jnp.bfloat16))
    cuda_lowering(lambda x, delta, w: fused_norm.add_rms_norm(fused_norm.Residual(x, delta), w, 1e-5, copies=copies),
                  x, delta, w)


def test_fused_norm_without_a_residual_writing_two_rows_lowers(cuda_lowering):
    # layer 0 of a decode step: the embeddings' row, normed and written twice for the QKV GEMM
    x, w = _avals(((1, 1, 2048), jnp.bfloat16), ((2048,), jnp.bfloat16))
    cuda_lowering(lambda x, w: fused_norm.add_rms_norm(x, w, 1e-5, copies=2), x, w)


def test_the_combine_writing_two_rows_lowers(cuda_lowering):
    q, k, v, qp, kp = _avals(((1, 1, 32, 64), jnp.bfloat16), ((1, S, 8, 64), jnp.bfloat16), ((1, S, 8, 64), jnp.bfloat16),
                             ((1, 1), jnp.int32), ((1, S), jnp.int32))
    cuda_lowering(functools.partial(decode_attention.attend, scale=0.125, combine=True, copies=2), q, k, v, qp, kp,
                  kernels=2)
