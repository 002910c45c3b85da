"""Probe: SwiGLU in the gate/up GEMM's epilogue (a Pallas Mosaic GPU kernel, Hopper) against XLA.

XLA computes a prefill chunk's MLP as a gate|up GEMM writing [T, 2F], then a fusion reading it
back for ``silu(gate) * up`` [T, F]: on the H100 2.5 ms of the draft chunk and 0.94 ms of the
pruned base chunk (docs/performance.md), ~6 ms of the 8B's full prefill on an H200 at its
bandwidth floor. A GEMM that applies SwiGLU to its accumulator before the store writes [T, F]
once and drops that kernel, if its main loop keeps up with cuBLAS.

The kernel: ``engines.swiglu_gemm`` (JAX's Hopper matmul example with interleaved gate|up
columns and SwiGLU in its epilogue).

Prints, per shape (the 1B draft's chunk, the 8B's full chunk and a pruned-sized one of 1024 rows), the device time
(CUPTI, median of ``PROBE_ITERS``) of XLA's GEMM alone, XLA's GEMM + SwiGLU (the engines'
form, compiled with each engine's options), the upstream Mosaic matmul of the same [T, 2F]
GEMM, and the fused kernel in several tile configs, with each one's max relative error against
a float32 reference of the bf16 inputs::

    python3 scripts/probe_swiglu_gemm.py        # GPU (Hopper) only
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from spectrace.engines.swiglu_gemm import TILES, TILES_128, Tiles, interleave, swiglu_gemm


def main() -> int:
    from jax.experimental.mosaic.gpu import profiler

    iters = int(os.environ.get("PROBE_ITERS", "10"))
    dev = jax.devices()[0]
    print(f"{dev.device_kind}, jax {jax.__version__}; device time (CUPTI), median of {iters}")
    # the engines' TILES (3 stages) first; session 21's 4-stage set (session 22's table) after it
    configs = [TILES, Tiles(128, 128, steps=4), Tiles(128, 128, minor="M", steps=4), Tiles(128, 128, width=16, steps=4),
               Tiles(64, 256, steps=4), Tiles(64, 256, minor="M", steps=4), TILES_128]
    shapes = [("draft chunk (1B)", 10752, 2048, 8192, ()),
              ("full chunk (8B)", 10752, 4096, 14336, (("xla_gpu_enable_triton_gemm", False),)),
              # pruned-sized: the pipeline's 1104 rows do not tile (XLA's path); 1024 rows take TILES
              ("pruned-sized chunk (8B)", 1024, 4096, 14336, (("xla_gpu_enable_triton_gemm", False),))]
    only = os.environ.get("PROBE_SHAPES")
    rows = []

    def timed(fn, *args):
        out, times = profiler.measure(fn, iterations=iters)(*args)
        return out, statistics.median(times) * 1e3                                   # us

    for name, M, D, F, xla_opts in shapes:
        if only and name.split()[0] not in only.split(","):
            continue
        k = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(k[0], (M, D), jnp.bfloat16)                             # [M, D]
        wg = (0.02 * jax.random.normal(k[1], (D, F), jnp.float32)).astype(jnp.bfloat16)  # [D, F]
        wu = (0.02 * jax.random.normal(k[2], (D, F), jnp.float32)).astype(jnp.bfloat16)  # [D, F]
        w_cat = jnp.concatenate([wg, wu], axis=1)                                    # [D, 2F]
        hi = lax.Precision.HIGHEST
        xf = x.astype(jnp.float32)
        ref = np.asarray(jax.nn.silu(jnp.dot(xf, wg.astype(jnp.float32), precision=hi))
                         * jnp.dot(xf, wu.astype(jnp.float32), precision=hi))
        scale = float(np.abs(ref).max())

        def err(out):
            return float(np.abs(np.asarray(out, np.float32) - ref).max()) / scale

        def xla_mlp(x, w):
            g, u = jnp.split(jnp.dot(x, w), 2, axis=-1)                              # [M, F] x 2
            return jax.nn.silu(g) * u

        opts = dict(xla_opts)
        gemm = jax.jit(lambda x, w: jnp.dot(x, w)).lower(x, w_cat).compile(compiler_options=opts)
        mlp = jax.jit(xla_mlp).lower(x, w_cat).compile(compiler_options=opts)
        _, t_gemm = timed(gemm, x, w_cat)
        out, t_xla = timed(mlp, x, w_cat)
        print(f"\n{name}: [{M}, {D}] x [{D}, 2x{F}]  (XLA options {opts or 'default'})")
        print(f"  {'XLA GEMM alone':44s} {t_gemm:9.1f} us   ({2 * M * D * 2 * F / t_gemm / 1e6:5.0f} TFLOP/s)")
        print(f"  {'XLA GEMM + SwiGLU (the engines)':44s} {t_xla:9.1f} us   1.000   err {err(out):.4f}")
        rows.append((name, "xla", t_xla, 1.0))
        for t in configs:
            try:
                w_i = interleave(wg, wu, t.tile_n // 2)
                out, tf = timed(jax.jit(functools.partial(swiglu_gemm, tiles=t)), x, w_i)
                print(f"  {'fused ' + str(dataclasses.astuple(t)[:6]):44s} {tf:9.1f} us   {tf / t_xla:.3f}   "
                      f"err {err(out):.4f}")
                rows.append((name, str(t), tf, tf / t_xla))
            except Exception as e:  # noqa: BLE001
                print(f"  fused {dataclasses.astuple(t)[:6]}: {type(e).__name__}: {str(e)[:200]}")
        for t in configs[:2]:  # after the fused kernel: a failure here must not cost its figures
            try:
                from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as up

                cfg = up.TuningConfig(tile_m=t.tile_m, tile_n=t.tile_n, tile_k=t.tile_k, max_concurrent_steps=t.steps,
                                      wg_dimension=up.MatmulDimension.M)
                _, tm = timed(jax.jit(functools.partial(up.matmul, c=None, config=cfg)), x, w_cat)
                print(f"  {'upstream Mosaic GEMM ' + str((t.tile_m, t.tile_n)):44s} {tm:9.1f} us   "
                      f"({2 * M * D * 2 * F / tm / 1e6:5.0f} TFLOP/s)")
            except Exception as e:  # noqa: BLE001 - a probe reports and goes on
                print(f"  upstream Mosaic GEMM {(t.tile_m, t.tile_n)}: {type(e).__name__}: {str(e)[:160]}")
    print("\nbest fused / XLA per shape:")
    for name in dict.fromkeys(r[0] for r in rows):
        fused = [r for r in rows if r[0] == name and r[1] != "xla"]
        if fused:
            best = min(fused, key=lambda r: r[2])
            print(f"  {name:20s} {best[3]:.3f}  {best[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
