"""A decode step's projection of one or two rows as one Pallas kernel with enough programs to fill the GPU.

Why: a decode step multiplies one row (two, where ``common.gemm_rows`` doubles it to keep XLA's
dot a GEMM) by each weight, so it is bound by reading the weight once. XLA's Triton GEMMs
stream the large weights at 72-90% of the bandwidth, but the small ones at 49-58%: in the 1B
draft's look-ahead step on an H100 the fused QKV (2048 x 3072) took 6.5 us against 3.8 for its
bytes and the output projection (2048 x 2048) 5.1 against 2.5 (``scripts/probe_decode_ops.py``,
docs/evidence/h100-session14). A GEMM tile of 64-128 columns gives such a weight only 16-48
programs for the GPU's 132 SMs. Here each program owns ``block_n`` columns (16-64: 32-192
programs for 2048-3072 columns), walks the whole K axis ``block_k`` rows at a time and does the products on the CUDA
cores in float32 (a tensor-core tile needs 16 rows; a decode step has 1), so the weight is read
once, by every SM.

Off by default: not yet run on a GPU. ``$SPECTRACE_DECODE_KERNELS`` naming ``gemv`` turns it on
(:data:`BACKENDS`); then ``engines.models.common.gemv_row`` sends every single-row projection of
a single-device engine through it (a decode step's QKV, output, gate|up and down; a prefill
chunk's last row past its last layer's keys). ``scripts/check_gemv.py`` times it against XLA's
dot on the 1B's and 8B's shapes and sweeps the blocks; ``$SPECTRACE_GEMV_BLOCKS`` sets them.

Axis letters: M rows (1, 2, 4 or 8), K the contraction (the model or MLP width), N the output width.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from spectrace.engines.decode_attention import DECODE_KERNELS, pow2, triton_params

#: Where the kernel runs; elsewhere the caller's XLA dot (a test adds "cpu").
BACKENDS = ["gpu"] if "gemv" in DECODE_KERNELS else []


def blocks(value: str) -> tuple:
    """``$SPECTRACE_GEMV_BLOCKS`` as (columns, rows, warps, stages, deferred): "columns,rows,warps,
    stages[,deferred]" (``/`` may stand for ``,``; the first three powers of two; ``deferred`` 0 or 1,
    default 0: see :func:`_kernel`)."""
    parts = value.replace("/", ",").split(",")
    ints = [int(p) if p.strip().isdigit() else -1 for p in parts]
    if (len(ints) not in (4, 5) or not all(pow2(n) for n in ints[:3]) or ints[3] < 1
            or (len(ints) == 5 and ints[4] not in (0, 1))):
        raise ValueError(f"SPECTRACE_GEMV_BLOCKS={value!r}: expected columns,rows,warps,stages[,deferred], "
                         "the first three powers of two, deferred 0 or 1 (e.g. 32,256,4,3)")
    return (*ints[:4], bool(ints[4]) if len(ints) == 5 else False)


#: (columns a program, rows an inner step, Triton warps, Triton stages, deferred sum) unless the caller says.
DEFAULT = blocks(os.environ.get("SPECTRACE_GEMV_BLOCKS", "32,256,4,3"))
#: The most shared memory the pipelined weight tiles may take (stages x rows x columns x itemsize):
#: a float32 weight at the largest blocks would not fit an H100's 228 KB.
SMEM_BYTES = 160 * 1024


def _settings(*given) -> tuple:
    """(block_n, block_k, warps, stages, deferred): each one given, else :data:`DEFAULT`'s."""
    return tuple(d if v is None else v for v, d in zip(given, DEFAULT))


def supported(x, w, block_n: int | None = None, block_k: int | None = None, stages: int | None = None) -> bool:
    """Whether :func:`matmul` takes x [M, K] and w [K, N] on this backend: M a power of two up to
    8, the blocks dividing K and N (Triton blocks are powers of two), and the weight's pipelined
    tiles within :data:`SMEM_BYTES`."""
    M, K = x.shape
    N = w.shape[1]
    bn, bk, _, st, _ = _settings(block_n, block_k, None, stages, None)
    st = st or 3                                                                   # Pallas's default
    return (jax.default_backend() in BACKENDS and M in (1, 2, 4, 8) and K == w.shape[0]
            and K % bk == 0 and N % bn == 0 and st * bk * bn * w.dtype.itemsize <= SMEM_BYTES)


def _kernel(x_ref, w_ref, o_ref, *, block_k: int, deferred: bool):
    """Columns [j * BN, (j + 1) * BN) of every row: o [M, BN] = x [M, K] @ w [K, BN].

    ``deferred``: keep each row's products as a [BK, BN] float32 sum and reduce over BK once after
    the loop (no cross-thread reduction per step, more registers), else reduce every step."""
    M, K = x_ref.shape
    BN = o_ref.shape[1]

    def step(i, acc):                                                              # acc: M x [BN] (or [BK, BN]) float32
        ks = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
        w = w_ref[ks, :].astype(jnp.float32)                                       # [BK, BN]
        # each row loaded on its own: Triton's lowering has no slice of a loaded value
        rows = (x_ref[m, ks].astype(jnp.float32) for m in range(M))               # M x [BK]
        if deferred:
            return tuple(a + x[:, None] * w for x, a in zip(rows, acc))           # M x [BK, BN]
        return tuple(a + jnp.sum(x[:, None] * w, axis=0) for x, a in zip(rows, acc))  # M x [BN]

    shape = (block_k, BN) if deferred else (BN,)
    acc = lax.fori_loop(0, K // block_k, step, tuple(jnp.zeros(shape, jnp.float32) for _ in range(M)))
    for m, a in enumerate(acc):
        o_ref[m, :] = (jnp.sum(a, axis=0) if deferred else a).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block_n", "block_k", "warps", "stages", "deferred"))
def matmul(x, w, *, block_n: int | None = None, block_k: int | None = None, warps: int | None = None,
           stages: int | None = None, deferred: bool | None = None):
    """x [M, K] @ w [K, N] -> [M, N] in x's dtype, accumulated in float32 (XLA's dot rounds the
    same way; the summation order differs). Unset settings are :data:`DEFAULT`'s."""
    M, K = x.shape
    N = w.shape[1]
    bn, bk, warps, stages, deferred = _settings(block_n, block_k, warps, stages, deferred)
    if K != w.shape[0] or K % bk or N % bn:
        raise ValueError(f"gemv.matmul: x {x.shape} @ w {w.shape} with block_n {bn}, block_k {bk}: "
                         "the blocks must divide N and K")
    return pl.pallas_call(
        functools.partial(_kernel, block_k=bk, deferred=deferred),
        grid=(N // bn,),
        in_specs=[pl.BlockSpec((M, K), lambda j: (0, 0)),
                  pl.BlockSpec((K, bn), lambda j: (0, j))],
        out_specs=pl.BlockSpec((M, bn), lambda j: (0, j)),
        out_shape=jax.ShapeDtypeStruct((M, N), x.dtype),
        interpret=jax.default_backend() != "gpu",
        **triton_params(warps, stages),
    )(x, w)
