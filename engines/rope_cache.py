"""One decode step's RoPE and KV-cache write as one Pallas kernel, in place.

Why: in a Llama decode step XLA runs the RoPE of q, the RoPE of k fused into its cache write,
the cache write of v and the slices of the fused QKV output as separate kernels, ~1.3 us each
plus a launch gap, every layer (``scripts/probe_decode_ops.py``: 12 small kernels a layer in the
1B draft's look-ahead step on an H100, docs/performance.md). Here one program per batch row
reads the QKV projection's row once, rotates q and k in float32 (Hugging Face's rotate-half,
cast back to the model dtype as the XLA form does), writes the roped key and the value into
the cache's slot ``slot`` in place (``input_output_aliases``: the donated cache buffers are
updated, never copied) and returns the roped queries.

Used for decode steps (T = 1) of a family with a fused QKV row (``qkv_row``, Llama) on
:data:`BACKENDS` when the head counts and head size are powers of two (Triton blocks must be);
everything else keeps :func:`engines.models.common.apply_rope` and ``lax.dynamic_update_slice``.
On CPU the tests run it in Pallas's interpreter.

On by default (``$SPECTRACE_DECODE_KERNELS=none`` or a list without ``rope`` turns it off). On
an H100 it ran in ~2 us a layer, the same values as the XLA form (difference 0). Alone, with
the Pallas combine, it left a decode step's time unchanged (0.999x, session 13); with the
reworked combine both measured 0.981x the XLA forms' decode step (docs/performance.md, "Session 14").

Axis letters as in ``engines.model``; E = (N + 2K) H, the fused projection's width; R its rows
(1, or 2 where the row came doubled for the two-row GEMM: ``common.row_copies``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from spectrace.engines.decode_attention import DECODE_KERNELS, pow2, triton_params
from spectrace.engines.models import common

#: Where the kernel runs; elsewhere the XLA form (a test adds "cpu" to run the kernel's path).
#: Nowhere when ``$SPECTRACE_DECODE_KERNELS`` leaves ``rope`` out (``engines.decode_attention.DECODE_KERNELS``).
BACKENDS = ["gpu"] if "rope" in DECODE_KERNELS else []


def supported(cfg, cache_k) -> bool:
    """Whether :func:`rope_write` takes a decode step of this config and cache (else the XLA form)."""
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    return (jax.default_backend() in BACKENDS and all(pow2(n) for n in (N, K, H)) and H >= 32
            and cache_k.shape[2:] == (K, H))


def _kernel(slot_ref, qkv_ref, cos_ref, sin_ref, _k_in, _v_in, q_ref, k_ref, v_ref, *, N: int, K: int, H: int):
    """Batch row b: roped q [N, H] out; roped k and v [K, H] into cache slot ``slot``."""
    # The slot clamped into the cache as lax.dynamic_update_slice clamps it (a store past the end
    # would write outside the buffer).
    b, slot, h = pl.program_id(0), jnp.clip(slot_ref[0], 0, k_ref.shape[1] - 1), H // 2
    cos, sin = cos_ref[b, pl.ds(0, h)], sin_ref[b, pl.ds(0, h)]                    # [H/2] (the table repeats its halves)

    def rotate(first: int, M: int):
        """Heads [first, first + M) of the row, rotated: the two halves [M, H/2] in the model dtype."""
        x1 = qkv_ref[b, 0, pl.ds(first, M), pl.ds(0, h)].astype(jnp.float32)      # [M, H/2]
        x2 = qkv_ref[b, 0, pl.ds(first, M), pl.ds(h, h)].astype(jnp.float32)      # [M, H/2]
        dt = qkv_ref.dtype  # HF: x * cos + rotate_half(x) * sin in float32, then cast back
        return (x1 * cos[None] + (-x2) * sin[None]).astype(dt), (x2 * cos[None] + x1 * sin[None]).astype(dt)

    q1, q2 = rotate(0, N)
    q_ref[b, :, pl.ds(0, h)] = q1
    q_ref[b, :, pl.ds(h, h)] = q2
    k1, k2 = rotate(N, K)
    k_ref[b, slot, :, pl.ds(0, h)] = k1.astype(k_ref.dtype)
    k_ref[b, slot, :, pl.ds(h, h)] = k2.astype(k_ref.dtype)
    v_ref[b, slot] = qkv_ref[b, 0, pl.ds(N + K, K), :].astype(v_ref.dtype)        # [K, H]


def xla_rope_write(qkv, rope, cache_k, cache_v, slot, *, n_heads: int, n_kv_heads: int):
    """What :func:`rope_write` replaces, as the model does it without the kernel (its reference in
    tests and ``scripts/check_decode_kernels.py``): slice row 0, rotate q and k, write k and v at ``slot``."""
    B, _, E = qkv.shape
    N, K = n_heads, n_kv_heads
    H = E // (N + 2 * K)
    row = qkv[:, :1]                                                               # [B, 1, E]
    q, k, v = (row[..., a * H:b * H].reshape(B, 1, b - a, H) for a, b in ((0, N), (N, N + K), (N + K, N + 2 * K)))
    ck = lax.dynamic_update_slice(cache_k, common.apply_rope(k, rope).astype(cache_k.dtype), (0, slot, 0, 0))
    cv = lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, slot, 0, 0))
    return common.apply_rope(q, rope), ck, cv                                      # [B, 1, N, H], [B, S, K, H] x 2


@functools.partial(jax.jit, static_argnames=("n_heads", "n_kv_heads"), donate_argnums=(2, 3))
def rope_write(qkv, rope, cache_k, cache_v, slot, *, n_heads: int, n_kv_heads: int):
    """qkv [B, R, E] (row 0 is the step's), rope = (cos, sin) [B, 1, 1, H] float32, the layer's
    cache k, v [B, S, K, H] (donated), slot: int32 scalar -> (roped q [B, 1, N, H], k, v cache
    with this step's key and value at ``slot``)."""
    B, R, E = qkv.shape
    N, K = n_heads, n_kv_heads
    H = E // (N + 2 * K)
    cos, sin = (t.reshape(B, H) for t in rope)                                     # [B, H] x 2
    q, ck, cv = pl.pallas_call(
        functools.partial(_kernel, N=N, K=K, H=H),
        grid=(B,),
        out_shape=[jax.ShapeDtypeStruct((B, N, H), qkv.dtype),
                   jax.ShapeDtypeStruct(cache_k.shape, cache_k.dtype),
                   jax.ShapeDtypeStruct(cache_v.shape, cache_v.dtype)],
        input_output_aliases={4: 1, 5: 2},
        interpret=jax.default_backend() != "gpu",
        **triton_params(4, 1),
    )(jnp.reshape(slot, (1,)).astype(jnp.int32), qkv.reshape(B, R, N + 2 * K, H), cos, sin, cache_k, cache_v)
    return q[:, None], ck, cv
