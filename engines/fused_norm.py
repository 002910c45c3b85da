"""Llama's residual add and RMSNorm as one Pallas kernel: ``s = x + d``, ``h = w * norm(s)`` in one pass.

Why: XLA runs a Llama layer's ``x + branch`` then ``rms_norm`` as three kernels (the add, the
sum of squares, the scaling), twice a layer. In the 8B's decode step on an H200 that was 187 of
the ~718 launches and ~270 us of the 5.0 ms step, each kernel ~1.5 us for a 4096-element row
(``scripts/probe_decode_ops.py``, docs/evidence/h200-session8): launch-bound work. In a prefill
chunk the same three kernels read and write the whole ``[T, D]`` stream; one kernel reads
``x`` and ``d`` once and writes ``s`` and ``h`` once. Alone it is slower than the XLA form
(``scripts/check_fused_norm.py``); in the speculative pipeline, side by side on an H100, the
draft window went 0.939x and decode 0.996x (medians, docs/performance.md "Session 12").

:func:`add_rms_norm` computes exactly the XLA form's operations in its order (Hugging Face
Llama's: the add in the stream's dtype, the norm in float32, cast back, then the weight), one
row per program, so the two agree to float32 rounding of the mean (the reduction order
differs). Used on :data:`BACKENDS` for dims that are a power of two (Triton blocks must be);
everything else takes the XLA form. On CPU tests run the kernel in Pallas's interpreter.

The residual stream between layers is a :class:`Residual`: the stream and the branch output not
yet added, so the next layer's norm does the add (``engines.models.llama``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from spectrace.engines.decode_attention import triton_params

#: Where the kernel runs; elsewhere the XLA form (a test adds "cpu" to run the kernel's path).
BACKENDS = ["gpu"]
#: Rows per program where they divide the row count (a prefill chunk's rows are a multiple of 16);
#: 1 is what was measured in the pipeline (docs/performance.md "Session 12").
BLOCK_ROWS = 1


class Residual(NamedTuple):
    """The residual stream ``x`` [..., D] with a branch's output ``delta`` [..., D] not yet added.

    In a decode step ``delta`` may be the out projection's two-row product [..., 2, D] for the
    one-row stream ``x`` [..., 1, D] (row 0 is the one; :func:`add_rms_norm` and :func:`settle`
    take it). :func:`rows` selects rows of both halves alike, so it must take only row 0 there."""

    x: jax.Array
    delta: jax.Array


def settle(x):
    """The stream as one array: ``x`` itself, or a :class:`Residual`'s sum (an XLA add; a branch
    with its one row doubled, see :func:`add_rms_norm`, adds its row 0)."""
    if not isinstance(x, Residual):
        return x
    return x.x + (x.delta[..., :1, :] if _doubled(x) else x.delta)


def _doubled(x: Residual) -> bool:
    """Whether the branch carries the stream's one row more than once (row 0 is the one)."""
    return x.delta.shape != x.x.shape


def rows(x, fn):
    """``fn`` applied to the array, or to both halves of a :class:`Residual` (row selection)."""
    return jax.tree.map(fn, x)


def xla_rms_norm(x, weight, eps):
    """x [..., D] normalised in float32, cast back, then scaled (HF Llama's order of operations)."""
    xf = x.astype(jnp.float32)                                                     # [..., D]
    normed = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)       # [..., D]
    return weight * normed.astype(x.dtype)                                         # [..., D]


def supported(x, weight) -> bool:
    D = x.shape[-1]
    return (jax.default_backend() in BACKENDS and D & (D - 1) == 0 and D >= 16
            and weight.shape == (D,) and weight.dtype == x.dtype)


def add_rms_norm(x, weight, eps: float, copies: int = 1):
    """``(s, h)``: the stream ``s`` [..., T, D] (``x``, or a :class:`Residual` summed) and
    ``h = weight * norm(s)``, the layer's normed input.

    A decode step's one row (T = 1) can come and go doubled, for the two-row GEMM of
    ``engines.models.common.gemm_rows``: a :class:`Residual`'s branch may hold ``[..., 2, D]``
    (the out projection's product, row 0 the one), and ``copies=2`` returns h as ``[..., 2, D]``
    (the row twice, for the QKV projection). In the kernel both are block shapes: the two
    concatenates XLA ran before the QKV and out projections (~1.1 us each a layer in the 1B
    draft's look-ahead step on an H100) are gone, and the slice of the out projection's product
    no longer rides on its split-K reduce (docs/performance.md, "Session 16")."""
    stream = x.x if isinstance(x, Residual) else x
    if copies != 1 and (stream.ndim < 2 or stream.shape[-2] != 1):
        raise ValueError(f"copies={copies}: only a single row (T = 1) is repeated, got shape {stream.shape}")
    if not supported(stream, weight):
        s = settle(x)
        h = xla_rms_norm(s, weight, eps)
        return s, h if copies == 1 else jnp.concatenate([h] * copies, axis=-2)
    if isinstance(x, Residual):
        return _fused(x.x, x.delta, weight, eps=float(eps), copies=copies)
    return x, _fused(x, None, weight, eps=float(eps), copies=copies)[1]


def _kernel(*refs, eps: float, has_delta: bool, copies: int):
    """R rows ([R, D]; one row: [D]): s = x (+ d) in the stream's dtype, h = w * (s * rsqrt(mean(s²) + eps)) cast back
    (one row written ``copies`` times: [copies, D])."""
    if has_delta:
        x_ref, d_ref, w_ref, s_ref, h_ref = refs
        s = (x_ref[...].astype(jnp.float32) + d_ref[...].astype(jnp.float32)).astype(s_ref.dtype)  # [R, D]
        s_ref[...] = s
    else:
        x_ref, w_ref, h_ref = refs
        s = x_ref[...]                                                             # [R, D]
    sf = s.astype(jnp.float32)
    inv = lax.rsqrt(jnp.mean(sf * sf, axis=-1, keepdims=s.ndim > 1) + eps)          # [R, 1] (one row: [])
    normed = (sf * inv).astype(h_ref.dtype)                                        # [R, D]
    h = (w_ref[...].astype(jnp.float32) * normed.astype(jnp.float32)).astype(h_ref.dtype)
    h_ref[...] = h if copies == 1 else jnp.broadcast_to(h[None], (copies, h.shape[-1]))


def _block_rows(M: int, want: int | None) -> int:
    r = want or BLOCK_ROWS
    while M % r:
        r //= 2
    return r


def _warps(D: int, itemsize: int) -> int:
    """Triton warps for one row: 8 from an 8 KB row up (the Triton tutorial's layer norm), else 4."""
    return 8 if D * itemsize >= 8192 else 4


@functools.partial(jax.jit, static_argnames=("eps", "warps", "rows", "copies"))
def _fused(x, delta, weight, *, eps: float, warps: int | None = None, rows: int | None = None, copies: int = 1):
    """The kernel over every row of x [..., D] (``delta`` None: no residual; [..., c, D] with
    x [..., 1, D]: its row 0 is added); ``warps``: Triton warps per program (default
    :func:`_warps`), ``rows``: rows per program (default :data:`BLOCK_ROWS`, halved until it
    divides the row count; 1 with a doubled row); ``copies``: h's row repeated as
    [..., copies, D]. ``scripts/check_fused_norm.py`` sweeps ``warps`` and ``rows``."""
    shape, D = x.shape, x.shape[-1]
    M = x.size // D
    one_row = copies != 1 or (delta is not None and delta.shape != shape)         # a decode step's doubled row
    R = 1 if one_row else _block_rows(M, rows)
    sq = pl.squeezed
    row = pl.BlockSpec((sq if R == 1 else R, D), lambda i: (i, 0))
    ins, in_specs = [x.reshape(M, D)], [row]                                       # in: x (, d); out: (s,) h
    if delta is not None:
        c = delta.size // (M * D)
        ins.append(delta.reshape(M, c, D) if c != 1 else delta.reshape(M, D))
        in_specs.append(pl.BlockSpec((sq, sq, D), lambda i: (i, 0, 0)) if c != 1 else row)  # its row 0
    h_spec = pl.BlockSpec((sq, copies, D), lambda i: (i, 0, 0)) if copies != 1 else row  # [M, copies, D]
    h_shape = jax.ShapeDtypeStruct((M, copies, D) if copies != 1 else (M, D), x.dtype)
    outs = pl.pallas_call(
        functools.partial(_kernel, eps=eps, has_delta=delta is not None, copies=copies),
        grid=(M // R,),
        in_specs=in_specs + [pl.BlockSpec((D,), lambda i: (0,))],
        out_specs=([row] if delta is not None else []) + [h_spec],
        out_shape=([jax.ShapeDtypeStruct((M, D), x.dtype)] if delta is not None else []) + [h_shape],
        interpret=jax.default_backend() != "gpu",
        **triton_params(warps or _warps(D, x.dtype.itemsize), 1),
    )(*ins, weight)
    h = outs[-1].reshape(shape if copies == 1 else shape[:-2] + (copies, D))
    return (x if delta is None else outs[0].reshape(shape)), h
