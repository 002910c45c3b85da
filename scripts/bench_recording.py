"""What recording costs on the real pipeline: speculative TTFT with the tracer on vs off, alternating.

Run by hand on the GPU machine (not a CI test; issue 19's "<= 1% of speculative TTFT"):

    . scripts/device_env.sh && python3 scripts/bench_recording.py --n 40

Llama-3.1-8B base / Llama-3.2-1B draft (random bf16 weights), a 10741-token prompt, keep 0.10,
device scoring, one chunk of 16384: the H200 pipeline of the README. Runs alternate off/on so
drift on a shared machine hits both alike; prints mean ± std per setting, the ratio and
Welch's t, and checks the tracer's books (recorded = exported + dropped + buffered).

``--xplane-rounds R`` adds what ``--xplane`` costs, reported separately: R rounds of ``--xplane-k``
recorded requests outside a ``tracer.xplane.profile`` block, then ``--xplane-k`` inside one (the
profiler running, every span mirrored as a ``TraceAnnotation``), alternating by round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # before transformers is imported

from spectrace import tracer  # noqa: E402
from spectrace.engines.speculative import SpecPrefillEngine  # noqa: E402
from spectrace.engines.tokenizer import exact_prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="runs per setting (default 40)")
    ap.add_argument("--base", default="llama-3.1-8b")
    ap.add_argument("--draft", default="llama-3.2-1b")
    ap.add_argument("--prompt-len", type=int, default=10741)
    ap.add_argument("--prefill-seq-len", type=int, default=16384)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--xplane-rounds", type=int, default=0, help="rounds of profiled vs unprofiled runs")
    ap.add_argument("--xplane-k", type=int, default=5, help="requests per round and setting")
    args = ap.parse_args()
    spec = SpecPrefillEngine.from_pretrained(args.draft, base=args.base, prefill_seq_len=args.prefill_seq_len,
                                             ctx_len=args.prompt_len + 64, keep=0.10, scoring="device")
    prompt = exact_prompt(spec.base.tokenizer, args.prompt_len)
    for on in (False, True, False, True):  # compile both paths
        tracer.configure(enabled=on)
        spec.run(prompt, gen_len=1, baseline=False)
    times = {False: [], True: []}
    for i in range(2 * args.n):
        on = bool(i % 2)
        tracer.configure(enabled=on)
        with tracer.capture():
            r = spec.run(prompt, gen_len=1, baseline=False)
        times[on].append(r.ttft_speculative_s * 1e3)
    tracer.configure(enabled=False)
    st = tracer.stats()
    m = {k: statistics.mean(v) for k, v in times.items()}
    s = {k: statistics.stdev(v) for k, v in times.items()}
    se = math.sqrt(s[True] ** 2 / args.n + s[False] ** 2 / args.n)
    t = (m[True] - m[False]) / se if se else 0.0
    res = {"n": args.n, "off_ms": times[False], "on_ms": times[True], "stats": st,
           "books_balance": st["spans_recorded"] == st["spans_exported"] + st["spans_dropped"] + st["spans_buffered"]}
    with open(os.path.join(args.out, "bench_recording.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"speculative TTFT, {args.base}/{args.draft}, {args.prompt_len} tokens, n={args.n} each, alternating")
    print(f"  recording off  {m[False]:8.2f} ± {s[False]:.2f} ms")
    print(f"  recording on   {m[True]:8.2f} ± {s[True]:.2f} ms")
    print(f"  on / off       {m[True] / m[False]:.4f}  (Welch t = {t:+.2f}; 95% CI of the difference "
          f"{m[True] - m[False] - 1.96 * se:+.2f} .. {m[True] - m[False] + 1.96 * se:+.2f} ms)")
    print(f"  books balance: {res['books_balance']} ({st['spans_recorded']} spans recorded)")
    if args.xplane_rounds:
        _xplane(spec, prompt, args)


def _xplane(spec, prompt, args) -> None:
    """Recorded requests with and without the JAX profiler running (``--xplane``), by rounds."""
    import tempfile

    from spectrace.tracer import xplane

    tracer.configure(enabled=True, exporter="none")
    got = {False: [], True: []}
    with tempfile.TemporaryDirectory() as logdir:
        for r in range(args.xplane_rounds + 1):  # round 0 warms the profiler up, unreported
            for profiled in (False, True):
                with xplane.profile(logdir) if profiled else contextlib.nullcontext():
                    ms = [spec.run(prompt, gen_len=1, baseline=False).ttft_speculative_s * 1e3
                          for _ in range(args.xplane_k)]
                if r:
                    got[profiled] += ms
    tracer.configure(enabled=False)
    m = {k: statistics.mean(v) for k, v in got.items()}
    s = {k: statistics.stdev(v) for k, v in got.items()}
    with open(os.path.join(args.out, "bench_xplane.json"), "w") as f:
        json.dump({"unprofiled_ms": got[False], "profiled_ms": got[True]}, f, indent=1)
    print(f"--xplane: recorded, {len(got[False])} requests each, {args.xplane_rounds} rounds of {args.xplane_k}")
    print(f"  unprofiled     {m[False]:8.2f} ± {s[False]:.2f} ms")
    print(f"  profiled       {m[True]:8.2f} ± {s[True]:.2f} ms   ({m[True] / m[False]:.3f}x, "
          f"+{m[True] - m[False]:.2f} ms)")


if __name__ == "__main__":
    main()
