"""The ``spectrace`` command: run, bench, merge, report, diff.

Parsing and dispatch only. ``run`` and ``bench`` need the JAX engines and import
:mod:`engines.jobs` lazily, so ``spectrace merge`` and ``spectrace report`` work where JAX is not
installed. Every user error is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from spectrace.tracer.errors import UserError, handle_interrupts, interrupted, interrupts_deferred


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + error; we want one line
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        return v
    return parse


def _nonnegative_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = -1
        if v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer (0 for none), got {text!r}")
        return v
    return parse


def _keep(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep must be a number in (0, 1], got {text!r}")
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"--keep must be in (0, 1], got {text!r}")
    return v


def _devices(text):
    """Device indices from ``0``, ``0,1``, ``0-3`` or ``0-3,6``, in the order given, each once."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"devices must be device indices or ranges like 0, 0,1 or 0-3; "
                                             f"got {text!r}") from None
        if first < 0 or last < first or last - first >= 4096:
            raise argparse.ArgumentTypeError(f"device range {part!r} in {text!r} must run upward from an index "
                                             "of 0 or more, like 0-3")
        out.extend(range(first, last + 1))
    if not out:
        raise argparse.ArgumentTypeError(f"devices {text!r} names no device; give indices like 0 or 0-3")
    twice = sorted({i for i in out if out.count(i) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"devices {text!r} names device(s) {twice} more than once")
    return out


# 32 MiB: ~8 million tokens at 4 bytes each, 60x the longest context of any preset (131072).
MAX_PROMPT_FILE_BYTES = 32 << 20


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="spectrace", description="Where an LLM's time-to-first-token goes.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("run", help="speculative + baseline prefill with tracing; writes trace, ttft.json, report")
    _model_options(r)
    r.add_argument("--runs", type=_positive_int("--runs"), default=1, help="measured runs after the warm-up (default 1)")
    r.add_argument("--xplane", action="store_true", help="also capture JAX's device profile and merge it into the trace")
    r.add_argument("--out", help="output directory (default ./spectrace-out/<timestamp>)")
    r.add_argument("--quiet", action="store_true", help="no progress bar, only the output paths")

    b = sub.add_parser("bench", help="seed 003's protocol: variants n times, mean ± std, effect vs baseline")
    _model_options(b)
    b.add_argument("--set", dest="variant_set", choices=["seed003", "scoring"], default="seed003",
                   help="seed003: decode/prefill loops, fused QKV, batched attention; scoring: host vs device")
    b.add_argument("--runs", type=_positive_int("--runs"), default=5, help="measured runs per variant (default 5)")
    b.add_argument("--warmup", type=_nonnegative_int("--warmup"), default=1,
                   help="unmeasured warm-up runs per variant (default 1)")
    b.add_argument("--format", choices=["markdown", "json"], default="markdown", help="what to print")
    b.add_argument("--out", help="also write bench.md and bench.json into this directory")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("merge", help="join a .pftrace with XPlane files (several processes or hosts)")
    m.add_argument("trace", help="a .pftrace written by spectrace")
    m.add_argument("xplanes", nargs="+", help="*.xplane.pb files, or directories holding them")
    m.add_argument("-o", "--output", required=True, help="the merged .pftrace to write")
    m.add_argument("--chrome-json", help="also write a Chrome trace-event JSON file here")

    rep = sub.add_parser("report", help="rebuild report.html from ttft.json (several dirs: mean ± std)")
    rep.add_argument("dirs", nargs="+", help="run directories holding ttft.json")
    rep.add_argument("-o", "--output", help="where to write report.html (default: the first directory)")

    d = sub.add_parser("diff", help="explain why one TTFT is slower than another: windows, spans, IO, chunks, noise")
    d.add_argument("a", help="run directory (ttft.json + trace.pftrace; or directories of runs), or bench output (bench.json)")
    d.add_argument("b", nargs="?", help="the other side; without it, --passes P Q or --variants V W compare within A")
    d.add_argument("--passes", nargs="+", metavar="PASS",
                   help="run passes: speculative (default), spec (the draft window), host_scoring, base_pruned, "
                        "baseline; one name for both sides or one per side")
    d.add_argument("--variants", nargs="+", metavar="VARIANT",
                   help="bench variants (default: every variant both bench outputs have)")
    d.add_argument("--alpha", type=float, default=0.05,
                   help="Welch's t over the runs: false discovery rate (Benjamini-Hochberg) over the rows (default 0.05)")
    d.add_argument("--outlier-k", type=float, default=5.0,
                   help="chunk outlier rule: slower than the median chunk by k·MAD and by 50%% (default 5)")
    d.add_argument("--json", dest="json_out", metavar="OUT", help="also write the diff as JSON here")
    d.add_argument("-o", "--output", metavar="HTML", help="also write the diff as an HTML page here")
    return p


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models and prompt")
    g.add_argument("--base", default="default-base", help="base model: checkpoint directory or preset (default default-base)")
    g.add_argument("--draft", default="default-draft", help="draft model: checkpoint directory or preset (default default-draft)")
    g.add_argument("--prompt-file", help="prompt text file (default: the built-in long prompt)")
    g.add_argument("--prompt-len", type=_positive_int("--prompt-len"), help="synthetic prompt of this many tokens (BOS included)")
    g.add_argument("--keep", type=_keep, default=0.10, help="fraction of prompt chunks the base prefills (default 0.10)")
    g.add_argument("--scoring", choices=["host", "device"], default="host",
                   help="host: QEfficient's flow (copy queries every chunk); device: score on the device")
    g.add_argument("--layers", choices=["all", "last4", "last1", "full", "sliding"], default="all",
                   help="draft layers used for scoring (full/sliding: by attention type, Gemma)")
    g.add_argument("--prefill-seq-len", type=_positive_int("--prefill-seq-len"), default=None,
                   help="tokens per prefill chunk (default 128 for the default pair, 2048 otherwise)")
    g.add_argument("--ctx-len", type=_positive_int("--ctx-len"), default=None,
                   help="KV cache length (default: enough for the prompt and --gen-len)")
    g.add_argument("--look-ahead", type=_positive_int("--look-ahead"), default=8, help="SpecPrefill look-ahead (default 8)")
    g.add_argument("--gen-len", type=_positive_int("--gen-len"), default=16, help="tokens to generate (default 16)")
    g.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: float32 on CPU, bfloat16 on GPU")
    g.add_argument("--base-devices", type=_devices, default=None, help="device(s) for the base engine: 0, 0,1 or 0-3 (several: tensor-parallel)")
    g.add_argument("--draft-devices", type=_devices, default=None, help="device(s) for the draft engine: 1, 4,5 or 4-7 (several: tensor-parallel)")


def main(argv=None) -> int:
    """Run one command; returns its exit code: 0, 2 for a user error, 130 for Ctrl-C.

    ``argv`` None means this is the ``spectrace`` process itself (the entry point): after the
    command it ignores Ctrl-C while the interpreter shuts down. Callers passing ``argv`` get
    their SIGINT handler back.
    """
    with handle_interrupts(then_ignore=argv is None):
        code = _main(argv)
    if code == 130 and argv is None and "jax" in sys.modules:
        _exit_without_teardown(code)
    return code


def _main(argv) -> int:
    try:
        return _dispatch(build_parser().parse_args(argv))
    except UserError as e:
        if interrupted():  # e.g. a load that failed because Ctrl-C cut it short
            return _interrupted()
        print(_one_line(str(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except BaseException:
        if interrupted():  # swallowed and turned into something else (an ImportError in jaxlib)
            return _interrupted()
        raise


def _exit_without_teardown(code: int) -> None:
    """End an interrupted ``spectrace`` process without the interpreter's teardown.

    Ctrl-C can cut short the host's wait for a JAX compilation that goes on in XLA's thread
    pool; the teardown then destroys the JAX client under it, and the process dies of SIGSEGV
    instead of exiting 130 (about 1 run in 10 interrupted while compiling, on this project's
    CPU: a core file showed ``PjRtLoadedExecutable::Create`` on a pool thread while
    ``~PjRtClient`` ran on the main one). What the teardown would do for spectrace runs first:
    the tracer's exit (flush, and the line saying what was not exported) and the streams.
    """
    try:
        from spectrace import tracer

        tracer._at_exit()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _one_line(message: str) -> str:
    """``message`` with line breaks and other unprintables escaped: an argument or a file name
    holding a newline must not split the error over two lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _interrupted() -> int:
    print("spectrace: interrupted", file=sys.stderr)
    return 130


def _dispatch(args) -> int:
    if args.command in ("run", "bench"):
        _check_model_args(args)
        # transformers prints "PyTorch was not found. Models won't be available..." on import:
        # an advisory (logger.warning_advice) that this variable turns off, and spectrace needs
        # only its configs and tokenizers. Real warnings stay; a user's own setting wins.
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        # A KeyboardInterrupt raised while a C extension initializes (jaxlib's nanobind modules)
        # aborts the process (SIGABRT, "terminate called..."): Ctrl-C waits for the imports.
        with interrupts_deferred():
            try:
                from spectrace.engines import jobs  # JAX only for the commands that run models

                jobs.preload()
            except ModuleNotFoundError as e:  # the tracer-only install: say what to add
                raise UserError(f"spectrace {args.command}: needs the JAX engines, which are not installed "
                                f"(no module {e.name!r}): pip install 'spectrace[engines]'") from None
            except ValueError as e:  # a setting the engines read on import ($SPECTRACE_DECODE_KERNELS)
                raise UserError(f"spectrace {args.command}: {e}") from None
        return jobs.run_command(args) if args.command == "run" else jobs.bench_command(args)
    if args.command == "merge":
        return _merge(args)
    if args.command == "diff":
        return _diff(args)
    return _report(args)


def _check_model_args(args) -> None:
    if args.prompt_file is not None:
        if args.prompt_len is not None:
            raise UserError("spectrace: give --prompt-file or --prompt-len, not both")
        try:
            with open(args.prompt_file, "rb") as f:
                raw = f.read(MAX_PROMPT_FILE_BYTES + 1)  # bounded: /dev/zero must not fill memory
            if len(raw) > MAX_PROMPT_FILE_BYTES:
                raise UserError(f"spectrace: --prompt-file {args.prompt_file!r} is larger than "
                                f"{MAX_PROMPT_FILE_BYTES} bytes; no model's context holds that much text")
            args.prompt_text = raw.decode("utf-8")
        except (OSError, ValueError) as e:  # ValueError: not UTF-8, or a NUL byte in the name
            raise UserError(f"spectrace: cannot read --prompt-file {args.prompt_file!r}: "
                            f"{getattr(e, 'strerror', None) or e}")
        if not args.prompt_text.strip():
            raise UserError(f"spectrace: --prompt-file {args.prompt_file!r} is empty")
    else:
        args.prompt_text = None
    for name in ("base", "draft"):
        value = getattr(args, name)
        looks_like_path = os.sep in value or value.startswith(".") or os.path.exists(value)
        if looks_like_path and not os.path.isdir(value):
            raise UserError(f"spectrace: --{name} {value!r} is not a checkpoint directory "
                            "(give a directory with config.json and *.safetensors, or a preset)")


def _merge(args) -> int:
    from . import merge as merge_mod
    from .xplane import find_xplane_files

    paths = []
    for p in args.xplanes:
        if os.path.isdir(p):
            found = find_xplane_files(p)
            if not found:
                raise UserError(f"spectrace merge: no *.xplane.pb files under {p!r}")
            paths.extend(found)
        else:
            paths.append(p)
    if not os.path.isfile(args.trace):
        raise UserError(f"spectrace merge: trace {args.trace!r} does not exist")
    for opt, out in (("-o", args.output), ("--chrome-json", args.chrome_json)):
        if out is not None:
            _check_output_file(f"spectrace merge: {opt}", out)
    try:
        summary = merge_mod.merge(args.trace, paths, args.output)
        if args.chrome_json:
            from .perfetto import export_chrome_json

            export_chrome_json(args.output, args.chrome_json)
    except OSError as e:
        raise UserError(f"spectrace merge: {_os_error(e)}")
    except ValueError as e:
        raise UserError(f"spectrace merge: {e}")
    med, mx = summary.get("median_us"), summary.get("max_us")
    residual = "n/a (no span paired)" if med is None else f"median {med:.1f} µs, max {mx:.1f} µs"
    print(f"wrote {args.output} ({len(paths)} XPlane file(s); alignment residual {residual})")
    if summary["device_time"]:
        from .device_time import format_rows

        print(format_rows(summary["device_time"]))
    return 0


def _report(args) -> int:
    from .report import write_report

    for d in args.dirs:
        if not os.path.isdir(d):
            raise UserError(f"spectrace report: {d!r} is not a directory holding ttft.json")
    if args.output is not None:
        _check_output_file("spectrace report: -o", args.output)
    try:
        path = write_report(args.dirs[0], run_dirs=args.dirs if len(args.dirs) > 1 else None, output=args.output)
    except OSError as e:
        raise UserError(f"spectrace report: {_os_error(e)}")
    except ValueError as e:
        raise UserError(f"spectrace report: {e}")
    print(f"wrote {path}")
    return 0


def _diff(args) -> int:
    import math

    from . import diff as diff_mod

    if not (math.isfinite(args.alpha) and 0 < args.alpha < 1):
        raise UserError(f"spectrace diff: --alpha must be in (0, 1), got {args.alpha!r}")
    if not (math.isfinite(args.outlier_k) and args.outlier_k > 0):
        raise UserError(f"spectrace diff: --outlier-k must be a positive number, got {args.outlier_k!r}")
    for opt, out in (("--json", args.json_out), ("-o", args.output)):
        if out is not None:
            _check_output_file(f"spectrace diff: {opt}", out)
    try:
        result = diff_mod.diff_paths(args.a, args.b, passes=args.passes, variants=args.variants,
                                     alpha=args.alpha, outlier_k=args.outlier_k)
        if args.json_out:
            diff_mod.write_json(args.json_out, result)
        if args.output:
            diff_mod.write_html(args.output, result)
    except OSError as e:
        raise UserError(f"spectrace diff: {_os_error(e)}")
    except ValueError as e:
        raise UserError(f"spectrace diff: {e}")
    print(diff_mod.format_text(result))
    for what, path in (("JSON", args.json_out), ("HTML", args.output)):
        if path:
            print(f"wrote {path} ({what})")
    return 0


def _check_output_file(what: str, path: str) -> None:
    """An output file's path must not be a directory, nor lie under a file (refused before any work)."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{what} {path!r}: {parent!r} is a file, not a directory")


def _os_error(e: OSError) -> str:
    """``cannot <x> FILE: reason`` for an OSError: the file the system named, and why, in one line."""
    name = e.filename if e.filename is not None else ""
    return f"{name}: {e.strerror}" if name and e.strerror else str(e)


if __name__ == "__main__":
    sys.exit(main())
