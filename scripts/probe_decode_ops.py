"""Where one decode step's time goes, per device op, against the weight-streaming floor.

Issue 19's decode target is 1.3x the floor (weights / HBM bandwidth); this says what the rest
is. One GPU call (results under ``$OUT``), for ``PROBE_MODEL`` (default ``llama-3.1-8b``; the
draft's look-ahead is ``llama-3.2-1b``) after a ``PROBE_LEN``-token prefill:

1. decode ``PROBE_TOKENS`` tokens unprofiled, 5 times: ms per token;
2. profile two decodes (the prefills outside the profile) and print each device op's time and
   launches *per step*, the idle time before each launch on its stream (the launch gap), with the
   output shape of the XLA op it runs (``long_name`` stat), and the split: GEMM kernels (cuBLAS
   ``nvjet``/``gemv``, Triton ``gemm_fusion``, CUTLASS) vs the rest;
3. name where each XLA fusion came from: the decode program's optimized HLO is dumped
   (``PROBE_HLO_DUMP``, default a fresh temporary folder; give each run its own) and each
   instruction's ``op_name`` metadata (the JAX op path, named scopes included) is printed beside
   the kernel of that name, so a small kernel reads as "mlp/mul" rather than
   "loop_multiply_fusion" (session 15's question: which of a step's ~6 small XLA fusions a layer
   could go). Pallas (``_kernel__N``) and cuBLAS kernels have no HLO instruction of their name:
   they print ``-``.

    . scripts/device_env.sh && python3 scripts/probe_decode_ops.py
    PROBE_MODEL=llama-3.2-1b PROBE_TOKENS=8 python3 scripts/probe_decode_ops.py   # the look-ahead

``PROBE_ATTN_TUNED="64:32,4,3"`` replaces ``engines.decode_attention.TUNED`` for a head size
(block, warps, stages) before anything compiles: a sweep's winner, tried in the whole step.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
import time
from collections import defaultdict

if __name__ == "__main__":  # not when probe_lookahead imports op_totals
    # Before jax starts its backend: dump the decode program's HLO after XLA's passes, as text.
    DUMP = os.environ.get("PROBE_HLO_DUMP") or tempfile.mkdtemp(prefix="probe_hlo_")
    os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={DUMP} --xla_dump_hlo_as_text "
                               "--xla_dump_hlo_module_re=.*decode_scan.*").strip()

import numpy as np  # noqa: E402
from spectrace.engines import decode_attention  # noqa: E402
from spectrace.engines.base import BaseEngine  # noqa: E402
from spectrace.engines.bench.base import hbm_bytes_per_s  # noqa: E402
from spectrace.tracer import xplane  # noqa: E402

MODEL = os.environ.get("PROBE_MODEL", "llama-3.1-8b")
PROMPT = int(os.environ.get("PROBE_LEN", "10741"))
TOKENS = int(os.environ.get("PROBE_TOKENS", "32"))
GEMM = re.compile(r"nvjet|gemm|gemv|cublas|cutlass|matmul", re.IGNORECASE)
SHAPE = re.compile(r"(?:bf16|f32|s32|f16|pred)\[[0-9,]*\]")


HLO_OP = re.compile(r'^\s*(?:ROOT )?%([\w.-]+) = .*?metadata=\{op_name="([^"]+)"')
SCAFFOLD = re.compile(r"^jit\([^)]*\)/(?:jit\(main\)/)?|(?:\w+/)?while/body/(?:closed_call(?:/|$))?")


def hlo_sources(dump_dir: str) -> dict[str, str]:
    """Kernel name as the profile gives it (the HLO instruction's, dots as underscores) -> the JAX
    op path of that instruction (its ``op_name`` less the jit and loop scaffolding), from the
    optimized HLO text of the decode programs dumped into ``dump_dir``."""
    out: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(dump_dir, "*decode_scan*after_optimizations.txt"))):
        with open(path) as f:
            for line in f:
                m = HLO_OP.match(line)
                if m:
                    name = m.group(1).replace(".", "_").replace("-", "_")             # as the profile names kernels
                    out.setdefault(name, SCAFFOLD.sub("", m.group(2)) or m.group(2))
    return out


GAP_NS = 50_000  # idle before a kernel counts as its launch gap when shorter (longer: between calls)


def op_totals(paths, gaps: dict | None = None) -> dict[str, list]:
    """Device op name -> [summed ns, launches, the XLA op it runs (``long_name``/``hlo_op``)] over
    the GPU planes of the XPlane files ``paths`` (shared with ``probe_lookahead.py``). ``gaps``,
    if given, gets op name -> summed idle ns on its stream between the previous kernel's end and
    its start (under :data:`GAP_NS`): what each kind of kernel costs in launch gaps."""
    ops: dict[str, list] = defaultdict(lambda: [0, 0, ""])
    for path in paths:
        for plane in xplane.read_xplane(path).planes:
            if not plane.name.startswith("/device:"):
                continue
            for _, events in plane.lines:
                end = None
                for name, start, dur, stats in sorted(events, key=lambda ev: ev[1]):
                    agg = ops[name]
                    agg[0] += dur
                    agg[1] += 1
                    agg[2] = agg[2] or str(stats.get("long_name") or stats.get("hlo_op") or "")
                    if gaps is not None and end is not None and 0 <= start - end < GAP_NS:
                        gaps[name] = gaps.get(name, 0) + start - end
                    end = start + dur
    return ops


def main() -> None:
    out = os.environ.get("OUT", tempfile.mkdtemp())
    for item in os.environ.get("PROBE_ATTN_TUNED", "").split():  # e.g. "64:32,4,3": head size: block, warps, stages
        head, _, setting = item.partition(":")
        decode_attention.TUNED[int(head)] = tuple(int(x) for x in setting.split(","))
    e = BaseEngine.from_pretrained(MODEL, prefill_seq_len=16384, ctx_len=PROMPT + TOKENS + 8)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, PROMPT).astype(np.int32)
    pos = np.arange(PROMPT, dtype=np.int32)
    steps = TOKENS - 1

    def decode():
        pre = e.prefill_from_ids(ids, pos, host_logits=False)
        t0 = time.perf_counter()
        e.decode(pre, TOKENS, window=None)
        return time.perf_counter() - t0

    decode()
    t = [decode() for _ in range(5)]
    per_token = 1e3 * np.mean(t) / steps
    # the GPU's datasheet bandwidth (engines.bench.base's table), unless PROBE_HBM_TBPS says otherwise
    tbps = float(os.environ.get("PROBE_HBM_TBPS") or hbm_bytes_per_s(e.device.device_kind) / 1e12)
    floor = e.config.weight_bytes(e.dtype.itemsize) / (tbps * 1e12) * 1e3
    kv = e.config.kv_cache_bytes(e.cache_slots, e.dtype.itemsize) / (tbps * 1e12) * 1e3
    print(f"{MODEL} on {e.device.device_kind}: {steps} decode steps after {PROMPT} tokens, "
          f"{per_token:.3f} ms/step unprofiled (mean of 5)")
    print(f"  floor: weights {floor:.3f} ms + KV cache ({e.cache_slots} slots) {kv:.3f} ms at {tbps} TB/s; "
          f"{per_token / floor:.2f}x the weights-only floor")

    rounds = 2
    paths = []
    for _ in range(rounds):
        pre = e.prefill_from_ids(ids, pos, host_logits=False)
        with xplane.profile(tempfile.mkdtemp(), mirror=False) as prof:
            e.decode(pre, TOKENS, window=None)
        paths += prof.paths
    gaps: dict = {}
    ops = {name: [ns, n, " ".join(SHAPE.findall(what)[:3])] for name, (ns, n, what) in op_totals(paths, gaps).items()}
    n = rounds * steps
    total = sum(v[0] for v in ops.values()) / n / 1e3
    launches = sum(v[1] for v in ops.values()) / n
    gemm = sum(v[0] for k, v in ops.items() if GEMM.search(k)) / n / 1e3
    print(f"  device ops per step: {total:.1f} us busy in {launches:.0f} launches "
          f"({launches / e.config.n_layers:.1f} per layer); GEMM kernels {gemm:.1f} us, other {total - gemm:.1f} us")
    print(f"  idle between kernels: {sum(gaps.values()) / n / 1e3:.1f} us a step")
    source = hlo_sources(DUMP)
    print(f"\n{'us/step':>9} {'n/step':>7} {'gap/launch':>10}  {'op':40} from (the JAX op path; output shapes)")
    for name, (ns, count, shapes) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:40]:
        print(f"{ns / n / 1e3:9.2f} {count / n:7.1f} {gaps.get(name, 0) / count / 1e3:10.2f}  {name[:40]:40} "
              f"{source.get(name, '-')[-72:]} {shapes}")
    with open(os.path.join(out, f"probe_decode_ops_{MODEL}.tsv"), "w") as f:
        for name, (ns, count, shapes) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
            f.write(f"{ns / n / 1e3:.3f}\t{count / n:.2f}\t{name}\t{source.get(name, '')}\t{shapes}\n")


if __name__ == "__main__":
    main()
