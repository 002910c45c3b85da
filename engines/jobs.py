"""What ``spectrace run`` and ``spectrace bench`` do with the engines (the CLI only parses).

``run``: load the draft and base engines, warm up once (compilation is not TTFT), then record
``--runs`` speculative passes, each with its side-by-side baseline, and write ``trace.pftrace``,
``ttft.json`` and ``report.html``. ``bench``: seed 003's protocol — every variant ``--runs`` times
after a warm-up, mean ± std, effect against one baseline.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

from spectrace import tracer
from spectrace.tracer import benchstats, ttft
from spectrace.tracer.errors import UserError

DEFAULT_PROMPT_TOKENS = 3000
_DEFAULT_PAIR = ("default-base", "default-draft")


# ---- inputs --------------------------------------------------------------------------------------
def make_prompt(tokenizer, n_tokens: int | None = None, text: str | None = None) -> str:
    """The prompt: ``text`` as given, or the bundled corpus cut to ``n_tokens`` tokens
    (``engines.tokenizer.exact_prompt``: the same prompt ``engines.bench_spec`` times)."""
    if text is not None:
        return text
    from spectrace.engines.tokenizer import exact_prompt

    return exact_prompt(tokenizer, n_tokens or DEFAULT_PROMPT_TOKENS)


def _device(indices, which):
    if indices is None:
        return None
    import jax

    devs = jax.devices()
    bad = [i for i in indices if not 0 <= i < len(devs)]
    if bad or len(indices) != 1:
        raise UserError(f"spectrace: --{which}-devices {','.join(map(str, indices))} must name one of the "
                        f"{len(devs)} device(s) 0..{len(devs) - 1} ({devs[0].platform})")
    return [devs[indices[0]]]


def _compile_cache() -> None:
    """JAX's persistent compilation cache under ``cache_root()/jax``, unless one is configured.

    Compilation is excluded from TTFT (a warm-up runs first) but not from the user's wait: a
    repeated ``spectrace run`` of the default pair takes 8.7 s instead of 14.7 s on a 2-core
    CPU with it. ``JAX_COMPILATION_CACHE_DIR`` (or ``jax.config``) set by the user wins.
    """
    import jax

    from spectrace.engines.defaults import cache_root

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def _seq_len(args) -> int:
    if args.prefill_seq_len:
        return args.prefill_seq_len
    return 128 if (args.base, args.draft) == _DEFAULT_PAIR else 2048


def _load_base(args, progress, *, prompt_len: int | None, room: int, **switches):
    """The base engine, the prompt, and a context of the prompt plus ``room`` tokens in whole chunks.

    The context is sized once the tokenizer has measured the prompt. Raises ``UserError`` for
    a bad checkpoint, preset or ``--ctx-len``.
    """
    from spectrace.engines import BaseEngine
    from spectrace.engines.presets import resolve

    seq = _seq_len(args)
    try:
        for model in (args.base, getattr(args, "draft", None)):  # fail on a bad name before loading anything
            if model is not None:
                resolve(model)
        progress.set_description("load base")
        base = BaseEngine.from_pretrained(args.base, prefill_seq_len=seq, ctx_len=args.ctx_len or seq,
                                          dtype=args.dtype, devices=_device(args.base_devices, "base"), **switches)
        prompt = make_prompt(base.tokenizer, prompt_len, args.prompt_text)
        n = len(base.tokenizer(prompt)["input_ids"])
        if args.ctx_len and n + args.gen_len > args.ctx_len:
            raise UserError(f"spectrace: the prompt has {n} tokens; with --gen-len {args.gen_len} it needs "
                            f"--ctx-len >= {n + args.gen_len}, got {args.ctx_len}")
        ctx = args.ctx_len or -((n + room) // -seq) * seq
        base.resize(ctx)
    except (OSError, ValueError) as e:
        raise UserError(f"spectrace: {e}")
    return base, prompt, ctx


def _load(args, progress):
    """The speculative engine (draft + base), the prompt and the context length."""
    from spectrace.engines.spec import SpecPrefillEngine

    base, prompt, ctx = _load_base(args, progress, prompt_len=args.prompt_len, room=args.gen_len + args.look_ahead)
    try:
        progress.set_description("load draft")
        spec = SpecPrefillEngine.from_pretrained(
            args.draft, base=base, prefill_seq_len=base.prefill_seq_len, ctx_len=ctx, keep=args.keep,
            look_ahead=args.look_ahead, scoring=args.scoring, layers=args.layers, dtype=args.dtype,
            draft_devices=_device(args.draft_devices, "draft"))
    except (OSError, ValueError) as e:
        raise UserError(f"spectrace: {e}")
    return spec, base, prompt, ctx


class _Progress:
    """A tqdm bar on stderr that appears only for steps longer than a second; silent with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty():  # a bar in a log file is noise
            from tqdm import tqdm

            self.bar = tqdm(total=total, delay=1.0, file=sys.stderr, leave=False,
                            bar_format="{desc:<22}{bar:30} {n_fmt}/{total_fmt} [{elapsed}]")

    def set_description(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- run -----------------------------------------------------------------------------------------
def run_command(args) -> int:
    out = Path(args.out or Path("spectrace-out") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"spectrace: cannot create --out {str(out)!r}: {e.strerror}")
    previous = tracer.configure(enabled=True)
    _compile_cache()
    progress = _Progress(total=3 + args.runs, quiet=args.quiet)
    try:
        spec, base, prompt, ctx = _load(args, progress)
        progress.update()
        progress.set_description("warm-up (compile)")
        with tracer.capture():  # compiled once here; TTFT below excludes compilation
            spec.run(prompt, gen_len=args.gen_len)
        progress.update()
        runs, run_spans, xplanes = _measured_runs(spec, prompt, args, out, progress)
        spans = [s for group in run_spans for s in group]
        progress.set_description("write trace")
        doc = ttft.build(runs, config=_config(args, spec, base, ctx), devices=_devices_of(spec, base),
                         versions=ttft.versions("jax", "jaxlib", "numpy", "transformers", "opentelemetry-sdk",
                                                "perfetto"))
        from spectrace.tracer.perfetto import write_pftrace
        from spectrace.tracer.report import write_report

        summary = write_pftrace(out / "trace.pftrace", spans, xplanes=xplanes,
                                metadata={"command": "spectrace run", "config": doc["config"]})
        if xplanes:
            doc["alignment"] = {k: summary.get(k) for k in ("median_us", "max_us", "offset_us", "pairs")}
            from spectrace.tracer.device_time import rows

            doc["device_time"] = rows(run_spans[-1], summary["device_time"])
        ttft.write(out / "ttft.json", doc)
        write_report(out)
        progress.update()
    finally:
        progress.close()
        tracer.configure(**previous)
    _print_summary(doc, out, quiet=args.quiet)
    return 0


def _measured_runs(spec, prompt, args, out, progress):
    import contextlib

    runs, spans = [], []  # spans: one list per run
    prof_cm = contextlib.nullcontext(None)
    if args.xplane:
        from spectrace.tracer import xplane

        prof_cm = xplane.profile(out / "xplane")
    with prof_cm as prof:
        for i in range(args.runs):
            progress.set_description(f"run {i + 1}/{args.runs}")
            with tracer.capture() as rec:
                result = spec.run(prompt, gen_len=args.gen_len)
            runs.append(ttft.run_entry(result, rec.spans))
            spans.append(rec.spans)
            progress.update()
    return runs, spans, (prof.paths if prof is not None else [])


def _config(args, spec, base, ctx) -> dict:
    return {"base": args.base, "draft": args.draft, "keep": args.keep, "scoring": args.scoring,
            "layers": args.layers, "prefill_seq_len": base.prefill_seq_len, "ctx_len": ctx,
            "look_ahead": args.look_ahead, "gen_len": args.gen_len, "runs": args.runs,
            "prompt": args.prompt_file or f"built-in, {args.prompt_len or DEFAULT_PROMPT_TOKENS} tokens",
            "dtype": str(base.dtype), "xplane": bool(args.xplane)}


def _devices_of(spec, base) -> dict:
    draft = getattr(spec, "draft", None)
    return {"base": str(base.device), "draft": str(getattr(draft, "device", base.device))}


def _print_summary(doc: dict, out: Path, *, quiet: bool) -> None:
    if quiet:
        print(out / "trace.pftrace")
        return
    ms = lambda s: f"{1e3 * s:10.2f} ms"  # noqa: E731
    print(f"\nTTFT breakdown ({doc['prompt_tokens']} prompt tokens, {doc['num_chunks']} chunks; "
          f"kept {doc['kept_tokens']} tokens in {doc['num_chunks_pruned']} chunks)")
    rows = [("spec device window (draft prefill)", "ttft_spec_device_s"),
            ("  host scoring: assemble", "t_assemble_s"), ("  host scoring: score", "t_score_s"),
            ("  host scoring: select", "t_select_s"), ("host scoring total", "ttft_host_scoring_s"),
            ("base prefill of kept tokens", "ttft_base_pruned_only_s"),
            ("speculative TTFT", "ttft_speculative_s"), ("baseline TTFT (full base prefill)", "ttft_baseline_s")]
    for label, key in rows:
        print(f"  {label:<36}{ms(doc[key])}")
    ratio = doc["ttft_speculative_s"] / doc["ttft_baseline_s"] if doc["ttft_baseline_s"] else float("nan")
    print(f"  {'speculative / baseline':<36}{ratio:10.2f} x")
    print("\nIO per pass and binding category (bytes, ms, transfers)")
    print(f"  {'pass':<12}{'category':<17}{'bytes':>14}{'ms':>11}{'count':>7}")
    for p, cats in doc["io"].items():
        for cat, t in cats.items():
            if t["count"]:
                print(f"  {p:<12}{cat:<17}{t['bytes']:>14,}{t['ms']:>11.3f}{t['count']:>7}")
    worst = ", ".join(f"{c['pass']}#{c['index']} {c['ms']:.2f} ms" for c in doc["slowest_chunks"])
    print(f"\nslowest chunks: {worst}")
    if doc.get("device_time"):
        from spectrace.tracer.device_time import format_rows

        print("\n" + format_rows(doc["device_time"], "Device time per span, last run"))
    print(f"\nwrote {out}/trace.pftrace, ttft.json, report.html")
    print(f"open {out.resolve()}/trace.pftrace in https://ui.perfetto.dev (Open trace file)")


# ---- bench ---------------------------------------------------------------------------------------
SEED003 = {"baseline": {}, "decode_python_loop": {"decode": "python"},
           "prefill_python_loop": {"prefill": "python"}, "qkv_separate": {"qkv": "separate"},
           "attention_batched": {"attention": "batched"}, "attention_vmap": {"attention": "vmap"},
           "last_chunk_full": {"last_chunk": "full"}}
SCORING = {"baseline": {"scoring": "host"}, "device_scoring": {"scoring": "device"}}


def bench_command(args) -> int:
    variants = SEED003 if args.variant_set == "seed003" else SCORING
    previous = tracer.configure(enabled=args.variant_set == "scoring")
    _compile_cache()
    progress = _Progress(total=len(variants) * (args.runs + args.warmup + 1), quiet=args.quiet)
    results = {}
    try:
        # The scoring variants differ only in SpecPrefillEngine's ``scoring``: one load serves all.
        loaded = None if args.variant_set == "seed003" else _load(args, progress)
        for name, switches in variants.items():
            if loaded is None:
                results[name] = _bench_base(args, name, switches, progress)
            else:
                results[name] = _bench_spec(args, name, loaded, switches, progress)
    finally:
        progress.close()
        tracer.configure(**previous)
    phases = None if args.variant_set == "seed003" else benchstats.TTFT_PHASES
    result = benchstats.compare(results, baseline="baseline", phases=phases)
    md = benchstats.render_markdown(result)
    if args.out:
        import json

        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench.md").write_text(md)
        (Path(args.out) / "bench.json").write_text(json.dumps(benchstats.to_json(result), indent=2) + "\n")
    if args.format == "json":
        import json

        print(json.dumps(benchstats.to_json(result), indent=2))
    else:
        print(md, end="")
    return 0


def _bench_base(args, name, switches, progress) -> list[dict]:
    progress.set_description(f"{name}: load")
    eng, prompt, _ = _load_base(args, progress, prompt_len=args.prompt_len or 512, room=args.gen_len, **switches)
    progress.update()

    def once():
        t0 = time.perf_counter()
        pre = eng.prefill(prompt)
        t1 = time.perf_counter()
        eng.decode(pre, args.gen_len)
        t2 = time.perf_counter()
        return {"prefill": t1 - t0, "generation": t2 - t1, "total": t2 - t0}

    return _repeat(args, name, progress, once)


def _bench_spec(args, name, loaded, switches, progress) -> list[dict]:
    from spectrace.engines.spec import SpecPrefillEngine

    engines, _, prompt, _ = loaded
    spec = SpecPrefillEngine(engines.draft, engines.base, keep=args.keep, look_ahead=args.look_ahead,
                             layers=args.layers, **switches)
    progress.update()

    def once():
        with tracer.capture():
            r = spec.run(prompt, gen_len=args.gen_len)
        return {f: getattr(r, f) for f in benchstats.TTFT_PHASES}

    return _repeat(args, name, progress, once)


def _repeat(args, name, progress, once) -> list[dict]:
    """``--warmup`` unrecorded calls of ``once()``, then ``--runs`` recorded ones."""
    runs = []
    for i in range(args.warmup + args.runs):
        progress.set_description(f"{name}: {'warm-up' if i < args.warmup else 'run'}")
        result = once()
        if i >= args.warmup:
            runs.append(result)
        progress.update()
    return runs
