"""A fresh prefill chunk's causal attention: cuDNN (what the engines run) against JAX's Mosaic GPU
FlashAttention-3-style kernel (``jax.experimental.pallas.ops.gpu.attention_mgpu``), alone.

Why: the 1B draft's 10,752-row chunk spends ~17 ms of its ~50 ms of device time (H100) in
cuDNN's causal SDPA (head dim 64). If the warp-specialised Hopper kernel were faster on these
shapes, it would cut the speculative TTFT's draft window directly. Session 15 (H100, jax 0.11.2,
docs/evidence/h100-session15/check_mgpu_attention.txt): it is not. Its best tiling took 1.08x
cuDNN's time on the 1B's heads and 1.02x on the 8B's. Those times include the float16 casts it
needs (that jax's kernel stages through float16 shared memory and rejects bfloat16): ~220 MB
moved for the 1B's heads, ~0.07 ms at 3.35 TB/s, so at head dim 64 the kernel alone is still
slower (~1.03x); at head dim 128 the casts (~0.13 ms) exceed the 0.04 ms gap, so there the
kernel alone may be level or faster (not measured). The engines keep cuDNN.

For each shape (the 1B's and the 8B's heads at the draft chunk's 10,752 rows) it times cuDNN and
the Mosaic kernel over a grid of tilings (best of REPS, after a warm-up, each call waited for),
and reports each one's max |diff| to a float32 reference on two query heads. Prints one line per
variant and a table last.
Usage (GPU, after ``. scripts/device_env.sh``): ``python3 scripts/check_mgpu_attention.py``.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

T = int(os.environ.get("ATTN_ROWS", 10752))
REPS = int(os.environ.get("ATTN_REPS", 5))
SHAPES = {"1b": (32, 8, 64), "8b": (32, 8, 128)}   # N query heads, K KV heads, H head dim


def timed(fn, *args):
    out = fn(*args)
    jax.block_until_ready(out)
    best = math.inf
    for _ in range(REPS):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, out


def reference(q, k, v, heads, scale):
    """float32 causal attention for query heads ``heads`` only: [T, len(heads), H]."""
    G = q.shape[2] // k.shape[2]
    outs = []
    for n in heads:
        qn = q[0, :, n].astype(jnp.float32)                                    # [T, H]
        kn, vn = k[0, :, n // G].astype(jnp.float32), v[0, :, n // G].astype(jnp.float32)
        s = (qn @ kn.T) * scale                                                # [T, T]
        s = jnp.where(jnp.tril(jnp.ones(s.shape, bool)), s, -jnp.inf)
        outs.append(jax.nn.softmax(s, axis=-1) @ vn)
    return jnp.stack(outs, axis=1)


def main() -> int:
    from jax.experimental.pallas.ops.gpu import attention_mgpu as mgpu

    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}, T={T}")
    rows = []
    for name, (N, K, H) in SHAPES.items():
        if name not in os.environ.get("ATTN_SHAPES", "1b 8b").split():
            continue
        kq, kk, kv = jax.random.split(jax.random.key(0), 3)
        q = jax.random.normal(kq, (1, T, N, H), jnp.bfloat16)
        k = jax.random.normal(kk, (1, T, K, H), jnp.bfloat16)
        v = jax.random.normal(kv, (1, T, K, H), jnp.bfloat16)
        scale = 1.0 / math.sqrt(H)
        flops = 4 * N * H * T * (T + 1) / 2                                    # causal QK^T and PV
        heads = (0, N - 1)
        ref = jax.jit(reference, static_argnums=(3, 4))(q, k, v, heads, scale)
        cudnn = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                                                     implementation="cudnn"))
        variants = [("cudnn", cudnn)]
        for bq, bkv, steps in itertools.product((64, 128), (64, 128), (2, 3)):
            cfg = mgpu.TuningConfig(block_q=bq, block_kv=bkv, max_concurrent_steps=steps, causal=True)
            # The kernel applies no scale: q is pre-scaled (exact for H = 64, a power-of-2 scale).
            # jax 0.11.2's kernel stages through float16 shared memory: float16 in and out.
            variants.append((f"mgpu q{bq} kv{bkv} s{steps}",
                             jax.jit(lambda q, k, v, cfg=cfg: mgpu.attention(
                                 (q.astype(jnp.float32) * scale).astype(jnp.float16), k.astype(jnp.float16),
                                 v.astype(jnp.float16), cfg).astype(q.dtype))))
        for label, fn in variants:
            try:
                ms, out = timed(fn, q, k, v)
            except Exception as e:  # a tiling the kernel rejects, or a compile error: say so, go on
                print(f"  {name} {label:<22} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                continue
            err = float(jnp.max(jnp.abs(out[0][:, heads].astype(jnp.float32) - ref)))
            rows.append((name, label, ms, flops / ms / 1e9, err))
            print(f"  {name} {label:<22} {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s  max|diff| {err:.4f}",
                  flush=True)
    print("\nshape  variant                     ms   TFLOP/s   vs cudnn   max|diff|")
    for name in SHAPES:
        mine = sorted((r for r in rows if r[0] == name), key=lambda r: r[2])
        base = next((r[2] for r in mine if r[1] == "cudnn"), math.nan)                # nan: cuDNN failed
        for r in mine[:5]:
            print(f"{r[0]:<6} {r[1]:<22} {r[2]:8.3f} {r[3]:9.1f} {r[2] / base:9.3f}x {r[4]:10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
