"""A decode step's projections as XLA's dot and as the Pallas kernel of engines.gemv, on the GPU.

For the 1B's and the 8B's four projections (fused QKV, output, fused gate|up, down): XLA's dot
as the engine runs it (two identical rows for weights under ``common.GEMM_MIN_WEIGHT``), the same
with XLA's exhaustive tiling search (``xla_gpu_exhaustive_tiling_search``, split-K included),
and the Pallas kernel over a small sweep of blocks and warps; each as microseconds per call and
the share of the HBM bandwidth (``HBM_TBPS``, default the H100's 3.35) its weight needs, plus the
kernel's largest difference from a float32 product against XLA's. Timed as calls in one compiled
loop over enough distinct copies of the weight that L2 cannot hold them (device time)::

    . scripts/device_env.sh && python3 scripts/check_gemv.py
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from check_decode_attention import best_us
from spectrace.engines import gemv
from spectrace.engines.models import common

SHAPES = {  # name: (K, N) of x [1, K] @ w [K, N]
    "1b qkv": (2048, 3072), "1b o": (2048, 2048), "1b gate_up": (2048, 16384), "1b down": (8192, 2048),
    "8b qkv": (4096, 6144), "8b o": (4096, 4096), "8b gate_up": (4096, 28672), "8b down": (14336, 4096),
}
HBM_TBPS = float(os.environ.get("HBM_TBPS", "3.35"))
L2_BYTES = 150e6  # copies of a weight until they exceed this: every call reads HBM, not L2
SWEEP = list(itertools.product((16, 32, 64), (256, 512), (4, 8)))  # block_n, block_k, warps
EXHAUSTIVE = os.environ.get("EXHAUSTIVE", "1") == "1"


def xla_form(x, w):
    """The engine's dot: x [1, K] doubled to two rows where the weight is small (``common.gemm_rows``)."""
    rows = x if w.size >= common.GEMM_MIN_WEIGHT else jnp.concatenate([x, x])     # [1 or 2, K]
    return jnp.dot(rows, w)[:1]                                                     # [1, N]


def looped(f, copies: int, calls: int, options=None):
    """``calls`` rounds of f over each of ``copies`` weights in one compiled loop; each round's
    x takes one element of the last output (a dependency: nothing is hoisted out of the loop)."""
    def run(x, *ws):
        def body(i, carry):
            x, _ = carry
            outs = tuple(f(x, w) for w in ws)
            return x.at[0, 0].set(outs[-1][0, 0]), outs[-1]
        return lax.fori_loop(0, calls, body, (x, jnp.zeros((1, ws[0].shape[1]), x.dtype)))
    return jax.jit(run, compiler_options=options)


def main() -> None:
    rng = np.random.default_rng(0)
    totals = {}  # (block_n, block_k, warps): [us summed over the shapes, shapes]
    xla_total = 0.0
    print(f"device {jax.devices()[0].device_kind}; us per call (best of 5), % of {HBM_TBPS} TB/s", flush=True)
    for name, (K, N) in SHAPES.items():
        copies = max(1, int(np.ceil(L2_BYTES / (K * N * 2))))
        calls = max(4, 128 // copies)
        x = jnp.asarray(rng.standard_normal((1, K)), jnp.bfloat16)
        ws = [jnp.asarray(rng.standard_normal((K, N)) * K ** -0.5, jnp.bfloat16) for _ in range(copies)]
        floor = K * N * 2 / (HBM_TBPS * 1e12) * 1e6
        n = calls * copies

        def show(label, us):
            print(f"  {name:11s} {label:28s} {us:8.2f} us  {100 * floor / us:5.1f}%", flush=True)

        print(f"{name}: K {K}, N {N}, {K * N * 2 / 1e6:.1f} MB, floor {floor:.2f} us, {copies} copies", flush=True)
        xla_us = best_us(looped(xla_form, copies, calls), [x, *ws], n)
        xla_total += xla_us
        show("xla", xla_us)
        want = jnp.dot(x.astype(jnp.float32), ws[0].astype(jnp.float32))
        err_xla = float(jnp.abs(xla_form(x, ws[0]).astype(jnp.float32) - want).max())
        best = (1e9, None)
        for bn, bk, warps in SWEEP:
            if N % bn or K % bk:
                continue
            f = lambda x, w, bn=bn, bk=bk, warps=warps: gemv.matmul(x, w, block_n=bn, block_k=bk, warps=warps, stages=3)
            try:
                us = best_us(looped(f, copies, calls), [x, *ws], n)
            except Exception as e:  # a config Triton cannot compile: say so, go on
                print(f"  {name:11s} pallas {bn}/{bk}/{warps}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            show(f"pallas n{bn} k{bk} w{warps}", us)
            t = totals.setdefault((bn, bk, warps), [0.0, 0])
            t[0], t[1] = t[0] + us, t[1] + 1
            best = min(best, (us, (bn, bk, warps)))
        if best[1]:
            bn, bk, warps = best[1]
            got = gemv.matmul(x, ws[0], block_n=bn, block_k=bk, warps=warps, stages=3)
            err = float(jnp.abs(got.astype(jnp.float32) - want).max())
            print(f"  {name:11s} best pallas {best[1]}: {best[0]:.2f} us; max |diff| to f32: "
                  f"pallas {err:.4f}, xla {err_xla:.4f} (|y| max {float(jnp.abs(want).max()):.2f})", flush=True)
        if EXHAUSTIVE:
            opts = {"xla_gpu_exhaustive_tiling_search": True}
            show("xla exhaustive tiling", best_us(looped(xla_form, copies, calls, opts), [x, *ws], n))
        jax.clear_caches()
    whole = {c: t[0] for c, t in totals.items() if t[1] == len(SHAPES)}
    if whole:  # the one setting for every shape (gemv.DEFAULT): the least time summed over them
        (bn, bk, warps), us = min(whole.items(), key=lambda kv: kv[1])
        print(f"best over all shapes: n{bn} k{bk} w{warps}: {us:.1f} us summed, xla {xla_total:.1f} us "
              f"({us / xla_total:.3f}x); SPECTRACE_GEMV_BLOCKS={bn},{bk},{warps},3", flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gemv_blocks.txt").write_text(f"{bn}/{bk}/{warps}/3\n")  # "/": a bench_variants value


if __name__ == "__main__":
    sys.exit(main())
