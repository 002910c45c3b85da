"""The speculative pipeline in several variants side by side: source trees, XLA flags, environment.

Each variant is a worker process (its own source tree and environment, all on device 0); the
parent sends requests round-robin so drift on a shared machine hits every variant alike, and
prints mean ± std per variant and the ratio to the first with its 95% interval (Welch, delta
method). A variant is ``LABEL=TREE`` optionally followed by ``,VAR=VALUE`` settings; TREE is a
folder with ``tracer/`` and ``engines/`` (``.`` for this checkout).

Issue 15's "the single-device path is not slower than before" (the default variants):
``before=.bench_before`` is the tree before the multi-device work, exported by hand
(``git archive f0dcbd3 tracer engines | tar -x -C .bench_before``; ignored, carry it to the GPU
machine), against ``after=.``::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python scripts/bench_variants.py --n 20   # CPU
    python3 scripts/bench_variants.py --base llama-3.1-8b --draft llama-3.2-1b --prompt-len 10741 \
        --prefill-seq-len 16384 --n 15                                                        # H200

XLA flags (issue 19), e.g. command buffers off::

    python3 scripts/bench_variants.py ... --variant default=. \
        --variant no-cmdbuf=.,XLA_FLAGS=--xla_gpu_enable_command_buffer=

Each worker builds ``SpecPrefillEngine.from_pretrained(draft, base=...)`` with recording on,
compiles with two warm-up requests, then answers ``run`` lines with one ``run()``'s speculative
TTFT, its windows, the full-prefill baseline and the decode time per token (``--gen-len``), plus
the kept count and the pruned logits' argmax (variants must agree on both).

Where ``nvidia-smi`` runs, the GPU's SM clock, power and power-cap flag are sampled during the
requests (``engines.bench.gpu_clocks``) and printed per variant under the ratios: a variant that
moves fewer bytes can still lose time to lower clocks at the power cap (session 22).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spectrace.engines.bench import gpu_clocks

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
    spec.run(prompt, gen_len=a["gen_len"], baseline=True)
print(json.dumps({"ready": tracer.__file__}), flush=True)
for line in sys.stdin:
    with tracer.capture() as t:
        r = spec.run(prompt, gen_len=a["gen_len"], baseline=True)
    dec = [s.duration_ns for s in t.spans if s.name == "decode"]
    # The speculative TTFT's host timeline: each span's first start and summed duration (ms) from
    # the draft window's start to the pruned base's end, by name and engine (where the unprofiled
    # TTFT's host time goes).
    w0 = next(s.start_ns for s in t.spans if s.name == "ttft.spec_device")
    w1 = next(s.end_ns for s in t.spans if s.name == "ttft.base_pruned")
    timeline = {}
    for s in sorted(t.spans, key=lambda s: s.start_ns):
        if w0 <= s.start_ns <= w1:
            key = f"{s.name}[{s.attributes.get('engine', '')}]"
            at, ms = timeline.get(key, ((s.start_ns - w0) / 1e6, 0.0))
            timeline[key] = (at, ms + s.duration_ns / 1e6)
    print(json.dumps({"spec_ms": r.ttft_speculative_s * 1e3, "baseline_ms": r.ttft_baseline_s * 1e3,
                      "draft_ms": r.ttft_spec_device_s * 1e3, "scoring_ms": r.ttft_host_scoring_s * 1e3,
                      "pruned_ms": r.ttft_base_pruned_only_s * 1e3,
                      "decode_ms_per_token": dec[0] / 1e6 / max(a["gen_len"] - 1, 1) if dec else 0.0,
                      "kept": int(r.kept_tokens), "top1": int(r.logits.argmax()),
                      "tokens": [int(x) for x in r.tokens], "timeline": timeline}), flush=True)
"""


def _source_dir(tree: Path, scratch: Path) -> Path:
    """A folder whose ``spectrace/`` links to ``tree``'s tracer/ and engines/ (the namespace package)."""
    src = scratch / f"{tree.name}-{len(list(scratch.iterdir()))}" / "spectrace"
    src.mkdir(parents=True)
    for part in ("tracer", "engines"):
        if not (tree / part).is_dir():
            raise SystemExit(f"--before {tree}: no {part}/ folder there (export a commit's tree into it first)")
        (src / part).symlink_to(tree / part)
    return src.parent


def _parse_variant(text: str) -> tuple[str, Path, dict]:
    """``LABEL=TREE[,VAR=VALUE...]`` -> (label, tree, settings)."""
    label, sep, rest = text.partition("=")
    parts = re.split(r",(?=[A-Za-z_][A-Za-z0-9_]*=)", rest)  # a value may hold commas (XLA flag lists)
    if not sep or not label or not parts[0]:
        raise SystemExit(f"--variant {text!r}: expected LABEL=TREE[,VAR=VALUE...]")
    settings = {}
    for p in parts[1:]:
        k, eq, v = p.partition("=")
        if not eq or not k:
            raise SystemExit(f"--variant {text!r}: setting {p!r} is not VAR=VALUE")
        settings[k] = v
    tree = Path(parts[0])
    return label, (tree if tree.is_absolute() else ROOT / tree).resolve(), settings


def _worker(label: str, tree: Path, settings: dict, scratch: Path, args) -> subprocess.Popen:
    env = {**os.environ, **settings}
    env["PYTHONPATH"] = os.pathsep.join([str(_source_dir(tree, scratch))] +
                                        [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # two processes share the one GPU
    cfg = {"base": args.base, "draft": args.draft, "prompt_len": args.prompt_len, "psl": args.prefill_seq_len,
           "gen_len": args.gen_len}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=scratch)


def _ready(label: str, p: subprocess.Popen, settings: dict) -> bool:
    """Wait for a started worker's ready line (workers load and compile side by side)."""
    try:
        ready = json.loads(p.stdout.readline() or "{}")
    except json.JSONDecodeError:
        ready = {}
    if "ready" not in ready:
        print(f"# {label}: left out: the worker did not start (see its stderr above)", flush=True)
        p.kill()
        return False
    print(f"# {label}: {ready['ready']} {settings or ''}", flush=True)
    return True


def _ask(p: subprocess.Popen) -> dict | None:
    """One request's answer, or None when the worker died (an XLA flag can abort it mid-run)."""
    try:
        p.stdin.write("run\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())
    except (BrokenPipeError, json.JSONDecodeError):
        return None


def _ratio(after: list[float], before: list[float]) -> tuple[float, float, float]:
    """after/before of the means, with a 95% interval from Welch's standard error (delta method)."""
    ma, mb = statistics.mean(after), statistics.mean(before)
    se = math.sqrt(statistics.variance(after) / len(after) / mb ** 2 +
                   ma ** 2 * statistics.variance(before) / len(before) / mb ** 4)
    return ma / mb, ma / mb - 1.96 * se, ma / mb + 1.96 * se


ROWS = (("spec_ms", "speculative TTFT"), ("draft_ms", "  draft window"), ("scoring_ms", "  scoring"),
        ("pruned_ms", "  pruned base"), ("baseline_ms", "full prefill"), ("decode_ms_per_token", "decode ms/token"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", default=None,
                    help="LABEL=TREE[,VAR=VALUE...] (repeat; default before=.bench_before after=.)")
    ap.add_argument("--n", type=int, default=20, help="requests per variant (default 20)")
    ap.add_argument("--base", default="default-base")
    ap.add_argument("--draft", default="default-draft")
    ap.add_argument("--prompt-len", type=int, default=3000)
    ap.add_argument("--prefill-seq-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=1, help="tokens per request (>1 measures decode too)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    if args.n < 2:
        raise SystemExit(f"--n {args.n}: needs at least 2 requests per variant")
    variants = [_parse_variant(v) for v in (args.variant or ["before=.bench_before", "after=."])]
    if len({v[0] for v in variants}) != len(variants):
        raise SystemExit(f"--variant: labels must differ, got {[v[0] for v in variants]}")
    with tempfile.TemporaryDirectory() as scratch:
        started = {}
        for label, tree, settings in variants:  # a variant that cannot start is left out, said once
            try:
                started[label] = (_worker(label, tree, settings, Path(scratch), args), settings)
            except SystemExit as e:
                print(f"# {label}: left out: {e}", flush=True)
        workers = {label: p for label, (p, settings) in started.items() if _ready(label, p, settings)}
        if not workers:
            raise SystemExit("no variant started")
        got, windows = {k: [] for k in workers}, {k: [] for k in workers}
        with gpu_clocks.Sampler() as sampler:  # stopped on the way out, whatever happens
            for _ in range(args.n):
                for label, p in list(workers.items()):
                    t0 = time.time()
                    answer = _ask(p)
                    if answer is None:  # left out from here on, said once; its answers so far are dropped
                        print(f"# {label}: the worker died after {len(got[label])} requests; left out", flush=True)
                        del workers[label], got[label]
                    else:
                        got[label].append(answer)
                        windows[label].append((t0, time.time()))
            samples = sampler.stop()
        if not got:
            raise SystemExit("every variant's worker died")
        for p in workers.values():
            p.stdin.close()
            p.wait(timeout=60)
    gpu = {lb: gpu_clocks.summarize(samples, windows[lb]) for lb in got} if samples else {}
    res = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": got, "gpu": gpu}
    with open(os.path.join(args.out, "bench_variants.json"), "w") as f:
        json.dump(res, f, indent=1)
    labels = list(got)
    first = labels[0]
    print(f"one device, {args.base}/{args.draft}, {args.prompt_len} tokens, psl {args.prefill_seq_len}, "
          f"n={args.n} per variant, round-robin; ratios to {first!r} (95% interval)")
    # Columns as wide as their labels: a value column 18, a ratio column 24, each at least.
    wv = {lb: max(18, len(lb) + 2) for lb in labels}
    wr = {lb: max(24, len(lb) + len(first) + 3) for lb in labels[1:]}
    print(f"{'ms':<18}" + "".join(f"{lb:>{wv[lb]}}" for lb in labels)
          + "".join(f"{lb + '/' + first:>{wr[lb]}}" for lb in labels[1:]))
    for key, title in ROWS:
        cols = {lb: [r[key] for r in got[lb]] for lb in labels}
        if not any(any(c) for c in cols.values()):
            continue
        line = f"{title:<18}" + "".join(
            f"{f'{statistics.mean(c):.2f} ± {statistics.stdev(c):.2f}':>{wv[lb]}}" for lb, c in cols.items())
        for lb in labels[1:]:
            ratio, lo, hi = _ratio(cols[lb], cols[first])
            line += f"{f'{ratio:.3f} ({lo:.3f}..{hi:.3f})':>{wr[lb]}}"
        print(line)
    for key in ("kept", "top1"):
        print(f"{key} equal across variants:", len({r[key] for lb in labels for r in got[lb]}) == 1)
    ref = got[first][0].get("tokens")
    for lb in labels[1:]:  # bf16 greedy tokens may part where two logits nearly tie: a share, not a bar
        toks = [r.get("tokens") for r in got[lb]]
        same = [next((i for i, (a, b) in enumerate(zip(ref, t)) if a != b), len(ref)) for t in toks if t]
        if ref and same:
            print(f"decode tokens, {lb} vs {first}: first difference at token {min(same)} of {len(ref)} (worst run)")
    if gpu:
        print(f"\nthe GPU during each variant's requests (nvidia-smi, {len(samples)} samples)")
        print(f"{'':<18}{gpu_clocks.HEADER}")
        for lb in labels:
            print(f"{lb:<18}{gpu_clocks.row(gpu[lb])}")
    _print_timeline(got, labels)


def _print_timeline(got: dict, labels: list) -> None:
    """Each variant's mean host timeline of the speculative TTFT: when each span first starts
    (ms from the window's start) and its summed duration, in the order of the first variant."""
    names = list(got[labels[0]][0].get("timeline", {}))
    if not names:
        return
    print("\nhost timeline of the speculative TTFT (mean ms: first start +summed duration)")
    print(f"{'span':<34}" + "".join(f"{lb:>22}" for lb in labels))
    for name in names:
        cells = []
        for lb in labels:
            marks = [r["timeline"][name] for r in got[lb] if name in r.get("timeline", {})]
            cells.append(f"{statistics.mean(m[0] for m in marks):9.2f} +{statistics.mean(m[1] for m in marks):8.2f}"
                         if marks else "-")
        print(f"{name[:34]:<34}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
