"""Host scoring's numpy (QEfficient's design, issue 19 target 5) against a straightforward vectorised numpy.

Host mode exists to show what scoring on the host costs, so it is not optimised away; its numpy
must still be no slower than the obvious vectorised form. The obvious form here (``plain``):
every layer at once (one ``[L, K, G*A, S]`` matmul), a softmax over S, the average pool as a
``sliding_window_view`` mean, max over layers and heads, mean over anchors. ``ours`` is
``engines.speculative.scoring.compute`` (a loop over layers, one layer's block live at a time,
the pool as k shifted adds). Both run interleaved, best of ``--repeats``, on Llama-3.2-1B's
scoring shapes (16 layers, 32 query / 8 KV heads, head dim 64, 8 anchors, 10741 keys), and
must give the same scores (checked each run):

    python scripts/bench_host_scoring.py [--repeats 5] [--tokens 10741]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np

from spectrace.engines.speculative import scoring


def plain(queries, keys, pool_kernel=13):
    """The straightforward vectorised form: queries [A, L, N, H], keys [L, S, K, H] -> scores [S]."""
    A, L, N, H = queries.shape
    S, K = keys.shape[1], keys.shape[2]
    G = N // K
    q = queries.reshape(A, L, K, G, H).transpose(1, 2, 3, 0, 4).reshape(L, K, G * A, H)   # [L, K, G*A, H]
    logits = np.matmul(q, keys.transpose(0, 2, 3, 1)) / np.float32(math.sqrt(H))         # [L, K, G*A, S]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)                                                        # softmax over S
    left = (pool_kernel - 1) // 2
    padded = np.pad(p, [(0, 0)] * 3 + [(left, pool_kernel - 1 - left)])                  # [L, K, G*A, S+k-1]
    pooled = np.lib.stride_tricks.sliding_window_view(padded, pool_kernel, axis=-1).mean(-1)  # [L, K, G*A, S]
    per = pooled.reshape(L, K, G, A, S).max(axis=(0, 1, 2))                              # [A, S]
    return per.mean(axis=0)                                                              # [S]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=10741)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    A, L, N, K, H, S = 8, 16, 32, 8, 64, args.tokens
    queries = rng.standard_normal((A, L, N, H), np.float32)
    keys = rng.standard_normal((L, S, K, H), np.float32)
    best = {"ours": math.inf, "plain": math.inf}
    for _ in range(args.repeats):
        for name, fn in (("ours", lambda: scoring.compute(queries, keys, pool_kernel=13)),
                         ("plain", lambda: plain(queries, keys, 13))):
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            if name == "ours":
                ref = out
            else:
                rel = float(np.abs(out - ref).max() / np.abs(ref).max())
                assert rel < 1e-5, f"the two forms differ: {rel:.2e}"
    print(f"host scoring, 1B shapes (A={A}, L={L}, N={N}, K={K}, H={H}, S={S}), best of {args.repeats}, "
          f"{platform.machine()} with {os.cpu_count()} CPUs, numpy {np.__version__}")
    for name in best:
        print(f"  {name:<6} {best[name] * 1e3:9.1f} ms   {best[name] / best['plain']:.2f}x plain")


if __name__ == "__main__":
    main()
