"""A decode step's projections as XLA's dot and as the Pallas kernel of engines.gemv, on the GPU.

For the 1B's and the 8B's four projections (fused QKV, output, fused gate|up, down): XLA's dot
as the engine runs it (two identical rows for weights under ``common.GEMM_MIN_WEIGHT``), the same
with XLA's exhaustive tiling search (``xla_gpu_exhaustive_tiling_search``, split-K included),
and the Pallas kernel over a sweep of blocks, warps and its deferred sum; each as microseconds per
call, less the timing loop's own cost, and the share of the HBM bandwidth its weight needs
(``HBM_TBPS``, default the GPU's: 3.35 TB/s for an H100, 4.8 for an H200). A setting whose
largest difference from a float32 product is well above XLA's is reported and left out. Timed
as a chain of calls in one compiled loop over enough distinct copies of the weight that L2
cannot hold them (device time). The best setting over all shapes goes to
``$OUT/gemv_blocks.txt`` (for ``$SPECTRACE_GEMV_BLOCKS``), before XLA's exhaustive search runs::

    . scripts/device_env.sh && python3 scripts/check_gemv.py
"""

from __future__ import annotations

import functools
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
L2_BYTES = 150e6  # copies of a weight until they exceed this: every call reads HBM, not L2
# block_n, block_k, warps, deferred (engines.gemv._kernel)
SWEEP = list(itertools.product((16, 32, 64), (256, 512), (4, 8), (False, True)))
EXHAUSTIVE = os.environ.get("EXHAUSTIVE", "1") == "1"


def hbm_tbps() -> float:
    """``$HBM_TBPS``, else the GPU's: 4.8 TB/s for an H200, 3.35 for an H100."""
    kind = jax.devices()[0].device_kind
    return float(os.environ.get("HBM_TBPS") or (4.8 if "H200" in kind else 3.35))


def xla_form(x, w):
    """The engine's dot: x [1, K], doubled to two rows where the weight is small (``common.gemm_rows``)."""
    rows = common.gemm_rows(x[None], w)[0]                                          # [1 or 2, K]
    return jnp.dot(rows, w)[:1]                                                     # [1, N]


def no_dot(x, w):
    """The loop's own cost per call (its one-element update), without a product: subtracted."""
    return jnp.zeros((1, w.shape[1]), x.dtype) + (x[0, 0] + 1)  # a real update: not folded away


def looped(f, copies: int, calls: int, options=None):
    """``calls`` rounds of f over each of ``copies`` weights in one compiled loop. Every call
    counts: its x takes one element of the previous call's output (a chain, so nothing is dropped,
    hoisted out of the loop or merged with another call); that update is :func:`no_dot`'s cost."""
    def run(x, *ws):
        def body(i, x):
            for w in ws:
                x = x.at[0, 0].set(f(x, w)[0, 0])
            return x
        return lax.fori_loop(0, calls, body, x)
    return jax.jit(run, compiler_options=options)


class Shape:
    """One projection's inputs on the device: x [1, K] and enough copies of w [K, N] to pass L2."""

    def __init__(self, name: str, K: int, N: int, tbps: float):
        self.name, self.K, self.N = name, K, N
        self.copies = max(1, int(np.ceil(L2_BYTES / (K * N * 2))))
        self.calls = max(4, 128 // self.copies)
        keys = jax.random.split(jax.random.key(K * 7 + N), self.copies + 1)
        self.x = jax.random.normal(keys[0], (1, K), jnp.bfloat16)
        self.ws = [(jax.random.normal(k, (K, N), jnp.float32) * K ** -0.5).astype(jnp.bfloat16) for k in keys[1:]]
        self.floor = K * N * 2 / (tbps * 1e12) * 1e6
        self.want = jnp.dot(self.x.astype(jnp.float32), self.ws[0].astype(jnp.float32))  # [1, N]
        self.overhead = self.time(no_dot)

    def time(self, f, options=None) -> float:
        return best_us(looped(f, self.copies, self.calls, options), [self.x, *self.ws], self.calls * self.copies)

    def err(self, f) -> float:
        return float(jnp.abs(f(self.x, self.ws[0]).astype(jnp.float32) - self.want).max())

    def show(self, label: str, us: float) -> float:
        """Print and return the time per call less the loop's own (the product's time)."""
        net = us - self.overhead
        print(f"  {self.name:11s} {label:30s} {us:8.2f} us, {net:8.2f} net  {100 * self.floor / net:5.1f}%", flush=True)
        return net


def main() -> None:
    tbps = hbm_tbps()
    print(f"device {jax.devices()[0].device_kind}; us per call (best of 5; net: less the loop's own), "
          f"% of {tbps} TB/s", flush=True)
    totals, xla_total = {}, 0.0  # (block_n, block_k, warps, deferred): [net us summed over the shapes, shapes]
    for name, (K, N) in SHAPES.items():
        sh = Shape(name, K, N, tbps)
        print(f"{name}: K {K}, N {N}, {K * N * 2 / 1e6:.1f} MB, floor {sh.floor:.2f} us, {sh.copies} copies, "
              f"loop's own {sh.overhead:.2f} us a call", flush=True)
        xla_total += sh.show("xla", sh.time(xla_form))
        err_xla = sh.err(xla_form)
        for bn, bk, warps, deferred in SWEEP:
            if N % bn or K % bk:
                continue
            f = functools.partial(gemv.matmul, block_n=bn, block_k=bk, warps=warps, stages=3, deferred=deferred)
            label = f"pallas n{bn} k{bk} w{warps}{' deferred' if deferred else ''}"
            try:
                err = sh.err(f)
                if err > 2 * err_xla + 1e-3:  # a wrong setting is never the fastest
                    print(f"  {name:11s} {label}: WRONG, max |diff| to f32 {err:.4f} (xla {err_xla:.4f})", flush=True)
                    continue
                net = sh.show(label, sh.time(f))
            except Exception as e:  # a setting Triton cannot compile: say so, go on
                print(f"  {name:11s} {label}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            t = totals.setdefault((bn, bk, warps, deferred), [0.0, 0])
            t[0], t[1] = t[0] + net, t[1] + 1
        print(f"  {name:11s} max |diff| to f32: xla {err_xla:.4f} (|y| max {float(jnp.abs(sh.want).max()):.2f})", flush=True)
        del sh
    whole = {c: t[0] for c, t in totals.items() if t[1] == len(SHAPES)}
    if whole:  # the one setting for every shape (gemv.DEFAULT): the least time summed over them
        (bn, bk, warps, deferred), us = min(whole.items(), key=lambda kv: kv[1])
        blocks = f"{bn}/{bk}/{warps}/3/{int(deferred)}"  # "/": a bench_variants value may not hold ","
        print(f"best over all shapes: {blocks}: {us:.1f} us summed (net), xla {xla_total:.1f} us "
              f"({us / xla_total:.3f}x); SPECTRACE_GEMV_BLOCKS={blocks}", flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gemv_blocks.txt").write_text(blocks + "\n")
    if EXHAUSTIVE:  # last: its autotuning may be slow, and the blocks are written already
        for name, (K, N) in SHAPES.items():
            sh = Shape(name, K, N, tbps)
            try:
                sh.show("xla exhaustive tiling", sh.time(xla_form, {"xla_gpu_exhaustive_tiling_search": True}))
            except Exception as e:
                print(f"  {name:11s} xla exhaustive tiling: {type(e).__name__}: {str(e)[:120]}", flush=True)
            del sh
            jax.clear_caches()


if __name__ == "__main__":
    sys.exit(main())
