"""What ``spectrace run`` and ``spectrace bench`` do with the engines (the CLI only parses).

``run``: load the draft and base engines, warm up once (compilation is not TTFT), then record
``--runs`` speculative passes, each with its side-by-side baseline, and write ``trace.pftrace``,
``ttft.json`` and ``report.html``. ``bench``: seed 003's protocol — every variant ``--runs`` times
after a warm-up, mean ± std, effect against one baseline.
"""

from __future__ import annotations

import sys
import time

from spectrace import tracer
from spectrace.tracer import benchstats, diff, ttft
from spectrace.tracer._atomic import OutputDir, write_text
from spectrace.tracer.errors import UserError, check_interrupt

from spectrace.engines.limits import DEFAULT_PROMPT_TOKENS, check_limits, check_memory, check_prompt, devices_for, seq_len


def preload() -> None:
    """Import the extension modules a run needs and start JAX's backend, all at once.

    ``spectrace`` calls this with Ctrl-C deferred: these initializations call back into Python,
    and a ``KeyboardInterrupt`` raised there can abort the process instead of ending it.
    """
    import jax
    import tokenizers  # noqa: F401
    from transformers import AutoConfig, PreTrainedTokenizerFast  # noqa: F401

    jax.devices()


# ---- inputs --------------------------------------------------------------------------------------
def make_prompt(tokenizer, n_tokens: int | None = None, text: str | None = None) -> str:
    """The prompt: ``text`` as given, or the bundled corpus cut to ``n_tokens`` tokens
    (``engines.tokenizer.exact_prompt``: the same prompt ``engines.bench.spec`` times)."""
    if text is not None:
        return text
    from spectrace.engines.tokenizer import exact_prompt

    return exact_prompt(tokenizer, n_tokens or DEFAULT_PROMPT_TOKENS)


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


def _load_base(args, progress, *, prompt_len: int | None, room: int, models: dict, **switches):
    """The base engine, the prompt, and a context of the prompt plus ``room`` tokens in whole chunks.

    The context is sized once the tokenizer has measured the prompt. Raises ``UserError`` for
    a bad checkpoint, preset or ``--ctx-len``, and for a prompt the models cannot take.
    """
    from spectrace.engines import BaseEngine

    seq = seq_len(args)
    try:
        progress.set_description("load base")
        base = BaseEngine.from_pretrained(args.base, prefill_seq_len=seq, ctx_len=args.ctx_len or seq,
                                          dtype=args.dtype, devices=devices_for(args.base_devices, "base"), **switches)
        progress.set_description("tokenize")
        prompt = make_prompt(base.tokenizer, prompt_len, args.prompt_text)
        n = len(base.tokenizer(prompt)["input_ids"])
        check_prompt(args, models, n, room=room, what="the prompt has")
        check_memory(args, models, slots=-((n + room) // -seq) * seq, seq=seq, weights=False)
        if args.ctx_len and n + args.gen_len > args.ctx_len:
            raise UserError(f"spectrace: the prompt has {n} tokens; with --gen-len {args.gen_len} it needs "
                            f"--ctx-len >= {n + args.gen_len}, got {args.ctx_len}")
        ctx = args.ctx_len or -((n + room) // -seq) * seq
        base.resize(ctx)
    except (OSError, ValueError) as e:
        raise UserError(f"spectrace: {e}")
    return base, prompt, ctx


def _load(args, progress, models):
    """The speculative engine (draft + base), the prompt and the context length."""
    from spectrace.engines.speculative.engine import SpecPrefillEngine

    base, prompt, ctx = _load_base(args, progress, prompt_len=args.prompt_len, room=args.gen_len + args.look_ahead,
                                   models=models)
    try:
        progress.set_description("load draft")
        spec = SpecPrefillEngine.from_pretrained(
            args.draft, base=base, prefill_seq_len=base.prefill_seq_len, ctx_len=ctx, keep=args.keep,
            look_ahead=args.look_ahead, scoring=args.scoring, layers=args.layers, dtype=args.dtype,
            draft_devices=devices_for(args.draft_devices, "draft"))
    except (OSError, ValueError) as e:
        raise UserError(f"spectrace: {e}")
    return spec, base, prompt, ctx


# ---- limits: refuse what the models or the machine cannot take, before allocating it ---------------
def _models(args, roles) -> dict:
    """``role -> (name, LlamaConfig)`` read from config.json or the preset, without loading weights."""
    from spectrace.engines.checkpoint import read_config
    from spectrace.engines.presets import resolve

    out = {}
    try:
        for role in roles:
            src = resolve(getattr(args, role))
            out[role] = (getattr(args, role), src.config if src.path is None else read_config(src.path))
    except (OSError, ValueError) as e:
        raise UserError(f"spectrace: {e}")
    return out


class _Progress:
    """A tqdm bar on stderr that appears only for steps longer than a second; silent with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty():  # a bar in a log file is noise
            from tqdm import tqdm

            self.bar = tqdm(total=total, delay=1.0, file=sys.stderr, leave=False,
                            bar_format="{desc:<22}{bar:30} {n_fmt}/{total_fmt} [{elapsed}]")

    def set_description(self, text: str) -> None:
        check_interrupt()  # every step boundary: a Ctrl-C that something swallowed lands here
        if self.bar is not None:
            self.bar.set_description_str(text)

    def update(self, n: int = 1) -> None:
        check_interrupt()
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- run ----------------------------------------------------------------------------------------
RUN_FILES = ("trace.pftrace", "ttft.json", "report.html")


def run_command(args) -> int:
    out = OutputDir(args.out, names=RUN_FILES)  # checked now, created when written, removed on failure
    models = _models(args, ("base", "draft"))
    check_limits(args, models, prompt_len=args.prompt_len or DEFAULT_PROMPT_TOKENS,
                  room=args.gen_len + args.look_ahead)
    previous = tracer.configure(enabled=True)
    _compile_cache()
    progress = _Progress(total=3 + args.runs, quiet=args.quiet)
    try:
        with out:
            spec, base, prompt, ctx = _load(args, progress, models)
            progress.update()
            progress.set_description("warm-up (compile)")
            with tracer.suppress():  # compiled once here; not a request: no TTFT, no spans, no metrics
                spec.run(prompt, gen_len=args.gen_len)
            progress.update()
            runs, run_spans, xplanes = _measured_runs(spec, prompt, args, out, progress)
            progress.set_description("write trace")
            doc = ttft.build(runs, config=_config(args, spec, base, ctx), devices=_devices_of(spec, base),
                             versions=ttft.versions("jax", "jaxlib", "numpy", "transformers", "opentelemetry-sdk",
                                                    "perfetto"))
            _write_run(out, doc, run_spans, xplanes)
            progress.update()  # the last Ctrl-C check: past it the three files stand
    finally:
        progress.close()
        tracer.configure(**previous)
    _print_summary(doc, out.path, quiet=args.quiet)
    return 0


def _write_run(out: OutputDir, doc: dict, run_spans: list, xplanes: list) -> None:
    """trace.pftrace, ttft.json and report.html, each atomically; any failure names the file."""
    from spectrace.tracer.perfetto import write_pftrace
    from spectrace.tracer.report import write_report

    try:
        summary = write_pftrace(out.file("trace.pftrace"), [s for group in run_spans for s in group],
                                xplanes=xplanes, metadata={"command": "spectrace run", "config": doc["config"]})
        if xplanes:
            doc["alignment"] = {k: summary.get(k) for k in ("median_us", "max_us", "offset_us", "pairs")}
            from spectrace.tracer.device_time import rows

            doc["device_time"] = rows(run_spans[-1], summary["device_time"])
        ttft.write(out.file("ttft.json"), doc)
        write_report(out.path, output=out.file("report.html"))
    except OSError as e:
        raise UserError(f"spectrace: cannot write {e.filename or out.path}: {e.strerror or e}") from None


def _measured_runs(spec, prompt, args, out, progress):
    import contextlib

    runs, spans = [], []  # spans: one list per run
    prof_cm = contextlib.nullcontext(None)
    if args.xplane:
        from spectrace.tracer import xplane

        prof_cm = xplane.profile(out.subdir("xplane"))
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
    return {"base": _where(base), "draft": _where(draft if draft is not None else base)}


def _where(engine) -> str:
    """The engine's device, or its tensor-parallel group ("TFRT_CPU_0,TFRT_CPU_1")."""
    if getattr(engine, "mesh", None) is None:
        return str(engine.device)
    return ",".join(str(d) for d in engine.devices)


def _print_summary(doc: dict, out, *, quiet: bool) -> None:
    if quiet:
        print(out / "trace.pftrace")
        return
    print("\n" + ttft.format_summary(doc))
    print("\n" + diff.run_summary(doc, out))  # speculative vs baseline, explained (spectrace diff's)
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
    out = OutputDir(args.out, names=("bench.md", "bench.json")) if args.out else None  # refused before any run
    models = _models(args, ("base",) if args.variant_set == "seed003" else ("base", "draft"))
    prompt_len = args.prompt_len or (512 if args.variant_set == "seed003" else DEFAULT_PROMPT_TOKENS)
    check_limits(args, models, prompt_len=prompt_len,
                  room=args.gen_len + (0 if args.variant_set == "seed003" else args.look_ahead))
    previous = tracer.configure(enabled=args.variant_set == "scoring")
    _compile_cache()
    progress = _Progress(total=len(variants) * (args.runs + args.warmup + 1), quiet=args.quiet)
    results = {}
    try:
        # The scoring variants differ only in SpecPrefillEngine's ``scoring``: one load serves all.
        loaded = None if args.variant_set == "seed003" else _load(args, progress, models)
        for name, switches in variants.items():
            if loaded is None:
                results[name] = _bench_base(args, name, switches, progress, models)
            else:
                results[name] = _bench_spec(args, name, loaded, switches, progress)
    finally:
        progress.close()
        tracer.configure(**previous)
    phases = None if args.variant_set == "seed003" else benchstats.TTFT_PHASES
    result = benchstats.compare(results, baseline="baseline", phases=phases)
    md = benchstats.render_markdown(result)
    import json

    js = json.dumps(benchstats.to_json(result), indent=2)
    if out is not None:
        with out:
            try:
                write_text(out.file("bench.md"), md)
                write_text(out.file("bench.json"), js + "\n")
            except OSError as e:
                raise UserError(f"spectrace: cannot write {e.filename or out.path}: {e.strerror or e}") from None
            check_interrupt()
    print(js if args.format == "json" else md, end="\n" if args.format == "json" else "")
    return 0


def _bench_base(args, name, switches, progress, models) -> list[dict]:
    progress.set_description(f"{name}: load")
    eng, prompt, _ = _load_base(args, progress, prompt_len=args.prompt_len or 512, room=args.gen_len,
                                models=models, **switches)
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
    from spectrace.engines.speculative.engine import SpecPrefillEngine

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
