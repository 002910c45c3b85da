"""A decode step's RoPE + cache write (engines.rope_cache) and the decode attention's Pallas
combine (engines.decode_attention) against their XLA forms, on the GPU.

For the 8B's and the 1B's decode shapes: each form's time per call, timed as ``CALLS`` calls in
one compiled loop (device time, not dispatch), and the largest difference between the forms;
then the 1B engine's greedy decode with both kernels against the XLA forms::

    . scripts/device_env.sh && python3 scripts/check_decode_kernels.py
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from check_decode_attention import best_us
from spectrace.engines import attention, decode_attention, rope_cache
from spectrace.engines.models import common

SHAPES = {"llama-3.1-8b": (32, 8, 128), "llama-3.2-1b": (32, 8, 64)}  # N, K, H
S, FILLED, CALLS = 11008, 10741, 256


def rope_check(rng, name, N, K, H) -> None:
    qkv = jnp.asarray(rng.standard_normal((1, 2, (N + 2 * K) * H)), jnp.bfloat16)
    rope = common.rope_tables(jnp.asarray([[FILLED]], jnp.int32), common.rope_inv_freq(H, 500000.0))
    ck, cv = (jnp.asarray(rng.standard_normal((1, S, K, H)), jnp.bfloat16) for _ in range(2))
    forms = {"xla": rope_cache.xla_rope_write, "kernel": rope_cache.rope_write}
    outs, us = {}, {}
    for f, fn in forms.items():
        step = functools.partial(fn, n_heads=N, n_kv_heads=K)
        outs[f] = jax.jit(step)(qkv, rope, ck.copy(), cv.copy(), jnp.int32(FILLED))

        def run(qkv, ck, cv, step=step):  # each call's q feeds the next call's row; the cache is carried
            def body(i, c):
                q, ck, cv = step(c[0], rope, c[1], c[2], i % S)
                return c[0] + q.reshape(1, 1, -1)[..., :1] * 0, ck, cv
            return lax.fori_loop(0, CALLS, body, (qkv, ck, cv))
        us[f] = best_us(jax.jit(run), (qkv, ck, cv), CALLS)
    diff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
               for a, b in zip(outs["xla"], outs["kernel"]))
    print(f"{name} RoPE + cache write: xla {us['xla']:.2f} us, kernel {us['kernel']:.2f} us "
          f"({us['kernel'] / us['xla']:.2f}x); largest difference {diff:.3g}")


def combine_check(rng, name, N, K, H) -> None:
    G = N // K
    q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.bfloat16) for s in ((1, 1, N, H), (1, S, K, H), (1, S, K, H)))
    kp = np.full((1, S), -1, np.int32)
    kp[0, :FILLED] = np.arange(FILLED)
    kp, qp = jnp.asarray(kp), jnp.asarray([[FILLED]], jnp.int32)
    ref = jax.jit(attention.masked)(*(a.astype(jnp.float32) for a in (q, k, v)), qp, kp)
    for per in (256, 128):
        res = {}
        for combine in (False, True):
            fn = functools.partial(decode_attention.attend, scale=H ** -0.5, per=per, combine=combine)
            out = jax.jit(fn)(q, k, v, qp, kp)
            err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)) / jnp.max(jnp.abs(ref)))
            loop = jax.jit(lambda q, k, v, fn=fn: lax.fori_loop(0, CALLS, lambda i, qq: qq + fn(qq, k, v, qp, kp) * 0, q))
            res[combine] = (best_us(loop, (q, k, v), CALLS), err)
        (tx, ex), (tk, ek) = res[False], res[True]
        print(f"{name} decode attention, {per} slots a program: XLA merge {tx:.2f} us (err {ex:.4f}), "
              f"Pallas combine {tk:.2f} us (err {ek:.4f}): {tk / tx:.2f}x")


def engine_check(preset: str = "llama-3.2-1b", n: int = 700, gen: int = 32) -> None:
    """Greedy decode after a 700-token prefill with both kernels against both XLA forms (bf16:
    tokens and the first step's top-1, as STYLE says)."""
    from spectrace.engines.base import BaseEngine

    e = BaseEngine.from_pretrained(preset, prefill_seq_len=256, ctx_len=1024)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, n).astype(np.int32)
    tokens = {}
    for form, on in (("xla", False), ("kernels", True)):
        rope_cache.BACKENDS = ["gpu"] if on else []
        decode_attention.COMBINE = on
        jax.clear_caches()
        tokens[form] = e.decode(e.prefill_from_ids(ids, np.arange(n, dtype=np.int32)), gen).tokens
    rope_cache.BACKENDS, decode_attention.COMBINE = ["gpu"], True
    same = np.asarray(tokens["xla"]) == np.asarray(tokens["kernels"])
    first = int(np.argmin(same)) if not same.all() else len(same)
    print(f"{preset} engine, {n} tokens then {gen} greedy: kernels vs XLA forms, tokens equal {bool(same.all())} "
          f"(first difference at {first})")


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"device {jax.devices()[0].device_kind}; us per call (best of 5, {CALLS} calls in one loop)")
    for name, (N, K, H) in SHAPES.items():
        rope_check(rng, name, N, K, H)
        combine_check(rng, name, N, K, H)
    engine_check()


if __name__ == "__main__":
    main()
