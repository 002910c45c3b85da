"""Make tests/engines/data/avg_pool1d.npz: SpecPrefill's scores as the published worker pools them.

The authors' worker pools attention rows with ``F.avg_pool1d(kernel_size=k, padding=k // 2,
stride=1)``. This script computes, with PyTorch, the token scores of seeded queries and keys
(softmax per head and anchor, that pooling, max over heads, mean over anchors) for kernels 13, 4
and 1; ``tests/engines/test_scoring.py`` checks ``engines.speculative.scoring.compute`` against them without
needing PyTorch. Run: ``python scripts/make_pool_reference.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "engines" / "data" / "avg_pool1d.npz"
KERNELS = (13, 4, 1)
A, N, K, H, S = 2, 2, 1, 8, 40  # anchors, query heads, KV heads, head dim, prompt tokens


def main() -> None:
    import torch

    arrays = {}
    for kernel in KERNELS:
        rng = np.random.default_rng(kernel)
        q = rng.standard_normal((A, 1, N, H)).astype(np.float32)         # [A, L=1, N, H]
        k = rng.standard_normal((1, S, K, H)).astype(np.float32)         # [L=1, S, K, H]
        k[:, rng.choice(S, size=S // 10, replace=False)] *= 3.0
        logits = np.einsum("ANH,SNH->NAS", q[:, 0].astype(np.float64),
                           np.repeat(k[0], N // K, axis=1).astype(np.float64))
        probs = torch.softmax(torch.from_numpy(logits / math.sqrt(H)), dim=-1).flatten(0, 1)   # [N*A, S]
        pooled = torch.nn.functional.avg_pool1d(probs, kernel_size=kernel, padding=kernel // 2, stride=1)
        want = pooled[..., :S].reshape(N, A, S).max(dim=0).values.mean(dim=0).numpy()          # [S]
        arrays.update({f"k{kernel}/q": q, f"k{kernel}/k": k, f"k{kernel}/scores": want})
    np.savez_compressed(OUT, torch_version=np.array(torch.__version__), **arrays)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
