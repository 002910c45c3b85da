import time, numpy as np, sys
from engines.base import BaseEngine
e = BaseEngine.from_pretrained("llama-3.2-1b", prefill_seq_len=4096, ctx_len=10741 + 16)
ids = np.random.default_rng(0).integers(3, e.config.vocab_size, 10741).astype(np.int32)
pos = np.arange(10741, dtype=np.int32)
la, pf = [], []
for i in range(6):
    t0 = time.perf_counter(); pre = e.prefill_from_ids(ids, pos, return_queries=True); t1 = time.perf_counter()
    g = e.decode(pre, 8, return_queries=True, window=None, span_name="lookahead"); np.asarray(g.queries); t2 = time.perf_counter()
    if i: pf.append(t1 - t0); la.append(t2 - t1)
print(f"1B prefill {1e3*np.mean(pf):.1f} ms, lookahead(7 steps) {1e3*np.mean(la):.1f} ± {1e3*np.std(la):.1f} ms")
