"""The Pallas decode attention (engines.decode_attention) against the XLA form, on the GPU.

For the 8B's and the 1B's decode shapes (10741 of 11008 slots filled): the largest difference
from a float32 reference (both bf16 forms against it), and each form's time per call, the two
timed as 64 calls in one compiled loop (device time, not dispatch), for several block shapes::

    . scripts/device_env.sh && python3 scripts/check_decode_attention.py
    ATTN_SHAPES=llama-3.2-1b ATTN_CONFIGS="64,128,4,3 64,256,2,2" python3 scripts/check_decode_attention.py

``ATTN_SHAPES`` (names, space-separated) and ``ATTN_CONFIGS`` (``block,per,warps,stages`` each,
``-`` for Pallas's default) narrow or widen the sweep.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from spectrace.engines import attention, decode_attention
from spectrace.engines.bench.base import hbm_bytes_per_s

SHAPES = {"llama-3.1-8b": (8, 4, 128), "llama-3.2-1b": (8, 4, 64)}  # K, G, H
S, FILLED, CALLS = 11008, 10741, 64
# (slots per inner step, slots per program, Triton warps, Triton stages; None: Pallas's default)
CONFIGS = [tuple(None if x == "-" else int(x) for x in c.split(","))
           for c in os.environ.get("ATTN_CONFIGS", "64,256,2,3 64,256,4,3 128,256,-,-").split()]
# q rows padded per KV head: None = only when tiles cannot be shared (the default); ATTN_PAD=0: the default only
PADS = [None, True] if os.environ.get("ATTN_PAD", "1") == "1" else [None]
# Copies of the cache the loop cycles through: 1 reads one copy 64 times (the 1B's 22.5 MB of keys
# and values can stay in an H100's 50 MB L2); 4 read each copy every fourth call, from HBM as a
# decode step does.
COPIES = int(os.environ.get("ATTN_COPIES", "1"))


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"device {jax.devices()[0].device_kind}; {FILLED} of {S} slots filled")
    names = os.environ.get("ATTN_SHAPES", " ".join(SHAPES)).split()
    for name, (K, G, H) in ((n, SHAPES[n]) for n in names):
        q32 = jnp.asarray(rng.standard_normal((1, 1, K * G, H)), jnp.float32)
        k32 = jnp.asarray(rng.standard_normal((1, S, K, H)), jnp.float32)
        v32 = jnp.asarray(rng.standard_normal((1, S, K, H)), jnp.float32)
        kp = np.full((1, S), -1, np.int32)
        kp[0, :FILLED] = np.arange(FILLED)
        kp, qp = jnp.asarray(kp), jnp.asarray([[FILLED]], jnp.int32)
        q, k, v = (a.astype(jnp.bfloat16) for a in (q32, k32, v32))
        assert decode_attention.supported(q, k, attention.FULL)
        ref = jax.jit(attention.masked)(q32, k32, v32, qp, kp)
        forms = {"xla": attention.masked}
        for block, per, warps, stages in CONFIGS:
            for pad in PADS:
                forms[f"b{block} p{per} w{warps or '-'} s{stages or '-'}{' pad' if pad else ''}"] = \
                    functools.partial(decode_attention.attend, scale=H ** -0.5, block=block, per=per, warps=warps,
                                      stages=stages, pad=pad)
        ks, vs = [k] + [k + 0 for _ in range(COPIES - 1)], [v] + [v + 0 for _ in range(COPIES - 1)]  # own buffers
        err, best = {}, {}
        for f, fn in forms.items():
            try:
                out = jax.jit(fn)(q, k, v, qp, kp)
                err[f] = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)) / float(jnp.max(jnp.abs(ref))))
            except Exception as e:  # a config this Triton cannot compile: said, not fatal
                print(f"  {name} {f}: {type(e).__name__}: {str(e)[:160]}")
                continue
            best[f] = best_us(_looped(fn, COPIES), (q, ks, vs, qp, kp), CALLS)
        kv_us = 2 * S * K * H * 2 / hbm_bytes_per_s(jax.devices()[0].device_kind) * 1e6
        print(f"{name}: K+V read floor {kv_us:.1f} us; per call on the device ({CALLS} in one loop, best of 5):")
        for f in best:
            print(f"  {f:<30} {best[f]:7.2f} us ({best[f] / best['xla']:.2f}x xla)  max rel. error vs f32 {err[f]:.4f}")


def best_us(loop, args, calls: int) -> float:
    """Microseconds per call of ``loop(*args)`` (one compiled loop of ``calls`` calls): best of 5
    after a warm-up (shared by the scripts/check_*.py kernel checks)."""
    jax.block_until_ready(loop(*args))
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(loop(*args))
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def _looped(fn, copies: int = 1):
    """``CALLS`` attention calls in one compiled loop, each feeding the next (device time, no
    dispatch), cycling through ``copies`` caches (lists ``k``, ``v``; each read in place)."""
    def body(qq, ks, vs, qp, kp):
        for k, v in zip(ks, vs):
            qq = qq + fn(qq, k, v, qp, kp) * 0
        return qq

    def run(q, ks, vs, qp, kp):
        return lax.fori_loop(0, CALLS // copies, lambda i, qq: body(qq, ks, vs, qp, kp), q)
    return jax.jit(run)

if __name__ == "__main__":
    main()
