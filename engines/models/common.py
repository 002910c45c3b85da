"""Pieces every model family shares: float32-exact einsums, RoPE tables, the projections and the two-row GEMM trick.

Axis letters (STYLE.md): B batch, T query positions, S key positions, N query heads, K KV heads,
H head dim, D model dim, F MLP dim, V vocab.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def precision(x):
    # float32 runs (CPU, tests) must match PyTorch to 1e-4: no TF32/bf16 passes on any backend.
    return lax.Precision.HIGHEST if x.dtype == jnp.float32 else None


def einsum(spec, a, b, out=None):
    return jnp.einsum(spec, a, b, precision=precision(a), preferred_element_type=out)


def rope_inv_freq(head_dim: int, theta: float, scaling=None) -> np.ndarray:
    """Inverse frequencies [H/2], float32, computed exactly as Hugging Face does (default, linear, llama3).

    ``scaling`` is a :class:`~spectrace.engines.config.RopeScaling` or None.
    """
    H = head_dim
    inv = (1.0 / (theta ** (np.arange(0, H, 2, dtype=np.int64).astype(np.float32) / H))).astype(np.float32)
    s = scaling
    if s is None:
        return inv
    if s.rope_type == "linear":
        return (inv / np.float32(s.factor)).astype(np.float32)
    low_wavelen = s.original_max_position / s.low_freq_factor
    high_wavelen = s.original_max_position / s.high_freq_factor
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions, inv_freq: np.ndarray):
    """cos, sin [B, T, 1, H] float32 for position ids [B, T]; computed once per forward, shared by layers."""
    inv = jnp.asarray(inv_freq)                                                    # [H/2]
    angles = positions.astype(jnp.float32)[:, :, None] * inv[None, None, :]        # [B, T, H/2]
    angles = jnp.concatenate([angles, angles], -1)[:, :, None, :]                  # [B, T, 1, H]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, rope):
    """Rotate x [B, T, M, H] (M heads) by ``rope_tables`` (HF's rotate-half layout)."""
    cos, sin = rope                                                                # [B, T, 1, H]
    xf = x.astype(jnp.float32)                                                     # [B, T, M, H]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], -1)               # [B, T, M, H]
    return (xf * cos + rotated * sin).astype(x.dtype)                              # [B, T, M, H]


# XLA's GPU simplifier turns a dot with one row and a weight of fewer than ~10M elements into a
# multiply + reduce (GpuAlgebraicSimplifier: "too small for rewriting" as a GEMM). In a decode
# step of Llama-3.2-1B that hits the fused QKV (2048 x 3072) and output (2048 x 2048)
# projections, and those reduces streamed the weights at ~1 TB/s of the H100's 3.35 (XPlane of
# scripts/probe_lookahead.py). Two identical rows keep the dot a GEMM: the draft's 7 look-ahead
# steps went 15.6 -> 13.2 ms (scripts/probe_spans.py, H100). Larger weights (8B) are GEMMs already.
GEMM_MIN_WEIGHT = 10_000_000
GEMM_ROWS_BACKENDS = ["gpu"]  # where the rewrite happens (a test adds "cpu" to run this path)


def _two_rows(x):
    """x [B, 1, ...] as [B, 2, ...] (the row twice) on :data:`GEMM_ROWS_BACKENDS`; else x."""
    if x.shape[1] == 1 and jax.default_backend() in GEMM_ROWS_BACKENDS:
        return jnp.concatenate([x, x], axis=1)                                     # [B, 2, ...]
    return x


def row_copies(weight) -> int:
    """How many times a one-row product with ``weight`` is fed its row: 2 where the one-row dot
    would become a reduce (:data:`GEMM_MIN_WEIGHT`, on :data:`GEMM_ROWS_BACKENDS`), else 1. A
    kernel writing the row just before such a product can write it twice instead of leaving XLA
    a concatenate (``fused_norm.add_rms_norm(copies=)``, ``decode_attention.attend(copies=)``)."""
    return 2 if weight.size < GEMM_MIN_WEIGHT and jax.default_backend() in GEMM_ROWS_BACKENDS else 1


def gemm_rows(x, weight):
    """x [B, T, ...], with its one row doubled (T = 2) where a one-row dot against ``weight`` would
    become a reduce on GPU (unless it comes doubled already); take ``[:, :T]`` of the product."""
    return _two_rows(x) if row_copies(weight) == 2 else x


#: The smallest LM head (vocab x model dim, elements) fed two rows: Llama-3.1-8B's 128256 x 4096
#: (525M) gains, Llama-3.2-1B's 128256 x 2048 (263M) did not (below).
LM_HEAD_MIN_WEIGHT = 400_000_000


def lm_head_rows(x, head_size: int):
    """x [B, 1, D] as [B, 2, D] (the row twice) on GPU when the LM head has ``head_size`` >=
    :data:`LM_HEAD_MIN_WEIGHT` elements, for the forward's LM head; take ``[:, 0]`` of the logits.

    A one-row bf16 LM head with float32 logits is a gemv, and with Triton GEMMs off (the base
    engine's chunks, ``engines.host.GPU_BASE_CHUNK_XLA``) XLA upcasts the whole weight for it
    first: 1279 us for the 8B's 1.05 GB head against 258 us as a two-row GEMM on an H200
    (``scripts/probe_lm_head.py``, docs/evidence/h200-session9; 254 vs 245 us with Triton on).
    A decode step runs the same forward: side by side the 8B's decode went 5.08 -> 4.81 ms/token
    (0.947x), while the 1B draft's window, every head doubled, measured 1.018x (slower), hence
    the threshold (docs/performance.md).
    """
    return _two_rows(x) if head_size >= LM_HEAD_MIN_WEIGHT else x


def project_qkv(lp, x, n_heads: int, n_kv_heads: int, head_dim: int, fused: bool):
    """Pre-RoPE queries [B, T, N, H], keys and values [B, T, K, H] from x [B, T, D] (fused or separate weights)."""
    B, T, _ = x.shape
    N, K, H = n_heads, n_kv_heads, head_dim
    if fused:
        qkv = fused_qkv(lp, x)[:, :T]                                              # [B, T, (N+2K)*H]
        q = qkv[..., : N * H].reshape(B, T, N, H)                                  # [B, T, N, H]
        k = qkv[..., N * H: (N + K) * H].reshape(B, T, K, H)                       # [B, T, K, H]
        v = qkv[..., (N + K) * H:].reshape(B, T, K, H)                             # [B, T, K, H]
        return q, k, v
    q = einsum("BTD,DNH->BTNH", x, lp["wq"])                                       # [B, T, N, H]
    k = einsum("BTD,DKH->BTKH", x, lp["wk"])                                       # [B, T, K, H]
    v = einsum("BTD,DKH->BTKH", x, lp["wv"])                                       # [B, T, K, H]
    return q, k, v


def fused_qkv(lp, x):
    """x [B, T, D] through the fused weight ``wqkv`` -> [B, T', (N+2K)*H], pre-RoPE; T' = 2 where
    a single row came doubled (``fused_norm.add_rms_norm(copies=2)``) or :func:`gemm_rows`
    doubled it (row 0 is the one)."""
    return einsum("BTD,DE->BTE", gemm_rows(x, lp["wqkv"]), lp["wqkv"])


def gated_mlp(lp, x, act):
    """down(act(gate(x)) * up(x)), x [B, T, D] -> [B, T, D] (gate|up fused, interleaved or apart)."""
    with jax.named_scope("mlp"):
        if "w_gate_up_il" in lp:  # interleaved (EngineOptions(mlp="epilogue")): SwiGLU in the GEMM where it can
            from spectrace.engines import swiglu_gemm
            return einsum("BTF,FD->BTD", swiglu_gemm.gated(x, lp["w_gate_up_il"], act), lp["w_down"])  # [B, T, D]
        if "w_gate_up" in lp:
            gate, up = jnp.split(einsum("BTD,DE->BTE", x, lp["w_gate_up"]), 2, axis=-1)  # [B, T, F] x 2
        else:
            gate = einsum("BTD,DF->BTF", x, lp["w_gate"])                          # [B, T, F]
            up = einsum("BTD,DF->BTF", x, lp["w_up"])                              # [B, T, F]
        return einsum("BTF,FD->BTD", act(gate) * up, lp["w_down"])                 # [B, T, D]


def out_proj_rows(lp, attn):
    """attn [B, T, N, H] -> [B, T', D] through ``wo`` [N, H, D]: T' = 2 for a decode step's one
    row doubled (by :func:`gemm_rows`, or already by the attention that wrote it twice); row 0
    is the one. For a consumer that takes row 0 itself (``fused_norm.add_rms_norm``)."""
    return einsum("BTNH,NHD->BTD", gemm_rows(attn, lp["wo"]), lp["wo"])


def out_proj(lp, attn, T: int):
    """attn [B, T or 2, N, H] -> [B, T, D] through ``wo`` [N, H, D] (T: the stream's rows)."""
    return out_proj_rows(lp, attn)[:, :T]
