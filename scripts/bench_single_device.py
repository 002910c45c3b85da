"""Is the one-device path as fast as before the multi-device work? Two trees, side by side, alternating.

Issue 15 asks that the engines across devices (meshes, device groups, ``src``/``dst`` on
transfers) leave the single-device path no slower. This runs the same speculative pipeline
from two source trees in two worker processes, each on the same one device, and alternates
requests between them so drift on a shared machine hits both alike:

* ``before``: the tree of a commit before the multi-device work, exported by hand
  (``git archive f0dcbd3 tracer engines | tar -x -C .bench_before``; ``.bench_before/`` is
  ignored, so carry it to the GPU machine);
* ``after``: this checkout.

Each worker builds ``SpecPrefillEngine.from_pretrained(draft, base=...)`` on device 0 with
recording on, compiles with two warm-up requests, then answers ``run`` lines with the request's
speculative TTFT and its full-prefill baseline (both windows of one ``run()``). Printed last:
mean ± std per tree, the ratio after/before and its 95% interval (Welch).

    # CPU (this 2-core machine; 8 forced host devices, the engines on device 0 only):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python scripts/bench_single_device.py --n 20
    # the H200 (after . scripts/device_env.sh):
    python3 scripts/bench_single_device.py --base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 \
        --prefill-seq-len 16384 --n 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, os, sys
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
from spectrace import tracer
from spectrace.engines.speculative import SpecPrefillEngine
from spectrace.engines.tokenizer import exact_prompt
a = json.loads(sys.argv[1])
spec = SpecPrefillEngine.from_pretrained(a["draft"], base=a["base"], prefill_seq_len=a["psl"],
                                         ctx_len=a["prompt_len"] + 64, keep=0.10, scoring="device")
prompt = exact_prompt(spec.base.tokenizer, a["prompt_len"])
tracer.configure(enabled=True, exporter="none")
for _ in range(2):
    spec.run(prompt, gen_len=1, baseline=True)
print(json.dumps({"ready": tracer.__file__}), flush=True)
for line in sys.stdin:
    with tracer.capture():
        r = spec.run(prompt, gen_len=1, baseline=True)
    print(json.dumps({"spec_ms": r.ttft_speculative_s * 1e3, "baseline_ms": r.ttft_baseline_s * 1e3,
                      "kept": int(r.kept_tokens)}), flush=True)
"""


def _source_dir(tree: Path, scratch: Path) -> Path:
    """A folder whose ``spectrace/`` links to ``tree``'s tracer/ and engines/ (the namespace package)."""
    src = scratch / tree.name / "spectrace"
    src.mkdir(parents=True)
    for part in ("tracer", "engines"):
        if not (tree / part).is_dir():
            raise SystemExit(f"--before {tree}: no {part}/ folder there (export a commit's tree into it first)")
        (src / part).symlink_to(tree / part)
    return src.parent


def _worker(label: str, tree: Path, scratch: Path, args) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_source_dir(tree, scratch))] +
                                        [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # two processes share the one GPU
    cfg = {"base": args.base, "draft": args.draft, "prompt_len": args.prompt_len, "psl": args.prefill_seq_len}
    p = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=scratch)
    ready = json.loads(p.stdout.readline() or "{}")
    if "ready" not in ready:
        raise SystemExit(f"the {label} worker did not start (see its stderr above)")
    print(f"# {label}: {ready['ready']}", flush=True)
    return p


def _ask(p: subprocess.Popen) -> dict:
    p.stdin.write("run\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def _ratio(after: list[float], before: list[float]) -> tuple[float, float, float]:
    """after/before of the means, with a 95% interval from Welch's standard error (delta method)."""
    ma, mb = statistics.mean(after), statistics.mean(before)
    se = math.sqrt(statistics.variance(after) / len(after) / mb ** 2 +
                   ma ** 2 * statistics.variance(before) / len(before) / mb ** 4)
    return ma / mb, ma / mb - 1.96 * se, ma / mb + 1.96 * se


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=ROOT / ".bench_before")
    ap.add_argument("--n", type=int, default=20, help="requests per tree (default 20)")
    ap.add_argument("--base", default="default-base")
    ap.add_argument("--draft", default="default-draft")
    ap.add_argument("--prompt-len", type=int, default=3000)
    ap.add_argument("--prefill-seq-len", type=int, default=128)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    if args.n < 2:
        raise SystemExit(f"--n {args.n}: needs at least 2 requests per tree")
    with tempfile.TemporaryDirectory() as scratch:
        workers = {"before": _worker("before", args.before.resolve(), Path(scratch), args),
                   "after": _worker("after", ROOT, Path(scratch), args)}
        got = {k: [] for k in workers}
        for i in range(2 * args.n):
            label = ("before", "after")[i % 2]
            got[label].append(_ask(workers[label]))
        for p in workers.values():
            p.stdin.close()
            p.wait(timeout=60)
    res = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": got}
    with open(os.path.join(args.out, "bench_single_device.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"one device, {args.base}/{args.draft}, {args.prompt_len} tokens, psl {args.prefill_seq_len}, "
          f"n={args.n} per tree, alternating")
    print(f"{'':14}{'before ms':>18}{'after ms':>18}{'after/before':>14}{'95% interval':>20}")
    for key, title in (("spec_ms", "speculative"), ("baseline_ms", "full prefill")):
        b, a = [r[key] for r in got["before"]], [r[key] for r in got["after"]]
        ratio, lo, hi = _ratio(a, b)
        print(f"{title:<14}{statistics.mean(b):>10.2f} ± {statistics.stdev(b):<5.2f}"
              f"{statistics.mean(a):>10.2f} ± {statistics.stdev(a):<5.2f}{ratio:>14.3f}{lo:>11.3f} .. {hi:.3f}")
    print("kept tokens equal:", {r["kept"] for r in got["before"]} == {r["kept"] for r in got["after"]})


if __name__ == "__main__":
    main()
