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
#: Rows per program where they divide the row count (a prefill chunk's rows are a multiple of 128);
#: 1 is what was measured in the pipeline (docs/performance.md "Session 12").
BLOCK_ROWS = 1


class Residual(NamedTuple):
    """The residual stream ``x`` [..., D] with a branch's output ``delta`` [..., D] not yet added."""

    x: jax.Array
    delta: jax.Array


def settle(x):
    """The stream as one array: ``x`` itself, or a :class:`Residual`'s sum (an XLA add)."""
    return x.x + x.delta if isinstance(x, Residual) else x


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


def add_rms_norm(x, weight, eps: float):
    """``(s, h)``: the stream ``s`` [..., D] (``x``, or a :class:`Residual` summed) and
    ``h = weight * norm(s)`` [..., D], the layer's normed input."""
    if not supported(x.x if isinstance(x, Residual) else x, weight):
        s = settle(x)
        return s, xla_rms_norm(s, weight, eps)
    if isinstance(x, Residual):
        return _fused(x.x, x.delta, weight, eps=float(eps))
    return x, _fused(x, None, weight, eps=float(eps))[1]


def _kernel(*refs, eps: float, has_delta: bool):
    """R rows ([R, D]; one row: [D]): s = x (+ d) in the stream's dtype, h = w * (s * rsqrt(mean(s²) + eps)) cast back."""
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
    h_ref[...] = (w_ref[...].astype(jnp.float32) * normed.astype(jnp.float32)).astype(h_ref.dtype)


def _block_rows(M: int, want: int | None) -> int:
    r = want or BLOCK_ROWS
    while M % r:
        r //= 2
    return r


def _warps(D: int, itemsize: int) -> int:
    """Triton warps for one row: 8 from an 8 KB row up (the Triton tutorial's layer norm), else 4."""
    return 8 if D * itemsize >= 8192 else 4


@functools.partial(jax.jit, static_argnames=("eps", "warps", "rows"))
def _fused(x, delta, weight, *, eps: float, warps: int | None = None, rows: int | None = None):
    """The kernel over every row of x [..., D] (``delta`` None: no residual); ``warps``: Triton
    warps per program (default :func:`_warps`), ``rows``: rows per program (default
    :data:`BLOCK_ROWS`, halved until it divides the row count); ``scripts/check_fused_norm.py``
    sweeps both."""
    shape, D = x.shape, x.shape[-1]
    M = x.size // D
    R = _block_rows(M, rows)
    streams = [x.reshape(M, D)] + ([] if delta is None else [delta.reshape(M, D)])  # in: x (, d); out: (s,) h
    row = pl.BlockSpec((pl.squeezed if R == 1 else R, D), lambda i: (i, 0))
    outs = pl.pallas_call(
        functools.partial(_kernel, eps=eps, has_delta=delta is not None),
        grid=(M // R,),
        in_specs=[row] * len(streams) + [pl.BlockSpec((D,), lambda i: (0,))],
        out_specs=[row] * len(streams),
        out_shape=[jax.ShapeDtypeStruct((M, D), x.dtype)] * len(streams),
        interpret=jax.default_backend() != "gpu",
        **triton_params(warps or _warps(D, x.dtype.itemsize), 1),
    )(*streams, weight)
    if delta is None:
        return x, outs[0].reshape(shape)
    return outs[0].reshape(shape), outs[1].reshape(shape)
