"""The LM head of a prefill chunk (one row) on the GPU, in the forms XLA might compile it.

Why: the XPlane of the 8B's base chunks on an H200 (docs/evidence/h200-session9) shows the
chunk's last-row LM head as ``wrapped_convert`` (0.75 ms) + a cuBLAS gemv (0.50 ms) against
~0.22 ms to read the 1.05 GB weight: with Triton GEMMs off (the base chunk's XLA options,
``engines.host.GPU_BASE_CHUNK_XLA``) a one-row bf16 dot with float32 output upcasts the weight.
This times each form per call on the device (``n`` calls in one compiled loop) with the base
chunk's options and without, and checks each against the float32 product.

    python3 scripts/probe_lm_head.py          # on the GPU machine (. scripts/device_env.sh)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from spectrace.engines.host import GPU_BASE_CHUNK_XLA

D, V, N = 4096, 128256, 32


def forms():
    f32 = jnp.float32
    return {
        "1 row, f32 out": lambda x, w: jnp.einsum("BD,DV->BV", x, w, preferred_element_type=f32),
        "2 rows, f32 out": lambda x, w: jnp.einsum("BD,DV->BV", jnp.concatenate([x, x]), w,
                                                   preferred_element_type=f32)[:1],
        "8 rows, f32 out": lambda x, w: jnp.einsum("BD,DV->BV", jnp.tile(x, (8, 1)), w,
                                                   preferred_element_type=f32)[:1],
        "1 row, bf16 out": lambda x, w: jnp.einsum("BD,DV->BV", x, w).astype(f32),
    }


def timed(fn, x, w, options):
    def loop(x, w):
        def body(i, acc):
            return acc + fn(x + acc[:, :D].astype(x.dtype) * 0, w)[:, :1].sum()  # a dependency per call
        return jax.lax.fori_loop(0, N, body, jnp.zeros((1, D), jnp.float32))
    compiled = jax.jit(loop, compiler_options=dict(options) or None)
    jax.block_until_ready(compiled(x, w))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(compiled(x, w))
        best = min(best, (time.perf_counter() - t) / N)
    return best


def main():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, D)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((D, V)) * 0.02, jnp.bfloat16)
    want = np.asarray(x, np.float32) @ np.asarray(w, np.float32)
    print(f"device {jax.devices()[0].device_kind}; LM head [1, {D}] x [{D}, {V}] bf16, "
          f"weight read floor {D * V * 2 / 4.8e12 * 1e6:.0f} us at 4.8 TB/s")
    for label, options in (("base chunk options", GPU_BASE_CHUNK_XLA), ("XLA defaults", ())):
        for name, fn in forms().items():
            got = np.asarray(jax.jit(fn, compiler_options=dict(options) or None)(x, w))
            err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
            top1 = int(np.argmax(got)) == int(np.argmax(want))
            print(f"  {label:<19} {name:<16} {timed(fn, x, w, options) * 1e6:8.1f} us  "
                  f"max rel. error {err:.2e}  top-1 {'same' if top1 else 'DIFFERS'}")


if __name__ == "__main__":
    main()
