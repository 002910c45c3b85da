"""The host-side costs inside a speculative TTFT, each on its own: syncs, small copies, tokenization.

The H100 run's spans showed ~2 ms ``bind`` spans that move 86 KB and a look-ahead whose 0-step
form (one position copy, one argmax, one token read back) took 2.3 ms. This prints, mean and
min of 20 after a warm-up, what one such operation costs on this machine:

    python scripts/probe_host.py
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from spectrace.engines.presets import resolve
from spectrace.engines.tokenizer import encode, exact_prompt, load_tokenizer

N = 20


def timed(label, fn):
    fn()
    t = []
    for _ in range(N):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    print(f"  {label:58} {1e3 * np.mean(t):7.3f} ms mean {1e3 * np.min(t):7.3f} min")


def main() -> None:
    dev = jax.devices()[0]
    print(f"host costs on {dev.device_kind}, {os.cpu_count()} CPUs (mean, min of {N}):")
    host = [np.arange(10752, dtype=np.int32).reshape(1, -1), np.arange(10752, dtype=np.int32).reshape(1, -1),
            np.asarray(10740, np.int32)]                                          # bind up to session 16
    one = np.zeros((2, 1, 10752), np.int32)                                        # a chunk's inputs since session 17
    small = jax.device_put(np.ones(4, np.int32), dev)
    logits = jax.device_put(np.random.default_rng(0).standard_normal((1, 128256), np.float32), dev)
    argmax = jax.jit(lambda x: jnp.argmax(x, -1).astype(jnp.int32))
    timed("device_put 3 arrays (86 KB) + block_until_ready", lambda: jax.block_until_ready(jax.device_put(host, dev)))
    timed("device_put 3 arrays, no block", lambda: jax.device_put(host, dev))
    timed("device_put one [2, 1, 10752] int32 (86 KB) + block", lambda: jax.block_until_ready(jax.device_put(one, dev)))
    timed("device_put one int32[1] + block", lambda: jax.block_until_ready(jax.device_put(np.ones(1, np.int32), dev)))
    timed("jit argmax of [1, 128256] + block", lambda: jax.block_until_ready(argmax(logits)))
    add = jax.jit(lambda a, b: a + b)
    timed("jit a + b, b a numpy int32[4] argument, + block",
          lambda: jax.block_until_ready(add(small, np.ones(4, np.int32))))
    timed("jit a + b, b on the device, + block", lambda: jax.block_until_ready(add(small, small)))
    timed("np.asarray of a device int32[4]", lambda: np.asarray(small + 1))
    timed("np.asarray of device logits [1, 128256] f32", lambda: np.asarray(logits * 1))

    # A prefill chunk's call: how long until the call returns (host: argument handling, launch,
    # any command-buffer update) and until its results are ready (the device's work).
    from spectrace.engines.base import BaseEngine

    # Compiled as the pipeline compiles its draft ("spec"). Runs up to session 16 named no engine,
    # which since session 7 meant the base's chunk options (cuBLAS, no command buffers).
    e = BaseEngine.from_pretrained(os.environ.get("PROBE_DRAFT", "llama-3.2-1b"), name="spec",
                                   prefill_seq_len=16384, ctx_len=10741 + 16)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, 10741).astype(np.int32)
    e.prefill_from_ids(ids, np.arange(10741, dtype=np.int32), return_queries=True)  # compiles
    fn = e.chunk_fn(return_queries=True)
    args = jax.device_put(np.stack([ids, np.arange(10741, dtype=np.int32)])[:, None], dev)  # [2, 1, T]
    ret, ready = [], []
    for i in range(N + 1):
        t0 = time.perf_counter()
        logits, e.cache, q = fn(e.params, e.cache, args, fresh=True)
        t1 = time.perf_counter()
        jax.block_until_ready((logits, e.cache, q))
        if i:  # the first call compiles (these unpadded arguments are a shape of their own)
            ret.append(t1 - t0)
            ready.append(time.perf_counter() - t0)
    print(f"  {'draft chunk call (10741 tokens, 1B): returns after':58} {1e3 * np.mean(ret):7.3f} ms mean "
          f"{1e3 * np.min(ret):7.3f} min; ready after {1e3 * np.mean(ready):.3f} ms mean")

    tok = load_tokenizer(resolve("llama-3.1-8b").tokenizer_path)
    prompt = exact_prompt(tok, 10741)
    timed("tokenizer(prompt) one call (10741 tokens)", lambda: tok(prompt)["input_ids"])
    for pieces in (4, 8, 16, 32, 64):
        timed(f"engines.tokenizer.encode, {pieces} pieces", lambda: encode(tok, prompt, pieces=pieces))
    timed("engines.tokenizer.encode, default pieces (an int32 array)", lambda: encode(tok, prompt))


if __name__ == "__main__":
    main()
