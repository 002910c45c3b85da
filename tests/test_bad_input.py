"""Issue 18: nothing the user types ends in a traceback.

Every bad input to every command is one line on stderr naming the file or option, exit code 2,
and nothing half-written left behind; Ctrl-C at any moment is exit 130 with no partial output;
the Perfetto writer takes any attribute value. Commands run in-process through
``tracer.cli.main`` where that is cheap (their errors come before any model runs), and as real
subprocesses where the process itself is the subject (signals, stderr of a whole run, a full
disk during a run).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spectrace import tracer
from spectrace.tracer import _atomic, cli
from spectrace.tracer.testing import Trace

from helpers import ROOT


def main(capfd, *argv) -> tuple[int, str]:
    """``spectrace ARGV`` in this process: (exit code, everything written to fd 2)."""
    capfd.readouterr()
    rc = cli.main([str(a) for a in argv])
    return rc, capfd.readouterr().err


def one_line(rc: int, err: str, *needles) -> str:
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert str(n) in lines[0], lines[0]
    return lines[0]


def spectrace(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spectrace.tracer.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def no_compile_cache(monkeypatch):
    """In-process runs must not switch on JAX's persistent cache for the rest of the session."""
    from spectrace.engines import jobs

    monkeypatch.setattr(jobs, "_compile_cache", lambda: None)


# ---------------------------------------------------------------- the Perfetto writer
WEIRD = {"array": np.arange(6).reshape(2, 3), "surrogate": "bad \ud800 text", "nested": {"a": {"b": [1, None]}},
         "none": None, "huge": 2**70, "negative_huge": -(2**80), "nan": math.nan, "inf": math.inf,
         "ninf": -math.inf, "np_uint64": np.uint64(2**64 - 1), "np_float": np.float32(1.5),
         "np_0d": np.array(2.5), "bytes": b"\xff\x00", "set": {3}}


@pytest.mark.parametrize("name", ["plain", 123, "lone \udcff surrogate", ("a", "tuple"), ["unhashable"]])
def test_the_perfetto_writer_takes_any_attribute_value_and_span_name(name, tmp_path):
    from spectrace.tracer.perfetto import export_chrome_json, write_pftrace

    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.span(name, **WEIRD) as s:
            s.set("key \ud800", np.zeros(3))
            s.set(7, "a non-str key")
    write_pftrace(tmp_path / "t.pftrace", rec)
    (v,) = Trace.load(tmp_path / "t.pftrace").spans
    expected = name if isinstance(name, str) else str(name)
    assert v.name == expected.encode("utf-8", "backslashreplace").decode()
    a = v.attributes
    assert a["array"] == str(WEIRD["array"]) and a["nested"] == "{'a': {'b': [1, None]}}" and "none" not in a
    assert a["surrogate"] == "bad \\ud800 text" and a["key \\ud800"] == "[0. 0. 0.]" and a["7"] == "a non-str key"
    assert a["huge"] == str(2**70) and a["negative_huge"] == str(-(2**80)) and a["np_uint64"] == str(2**64 - 1)
    assert math.isnan(a["nan"]) and a["inf"] == math.inf and a["ninf"] == -math.inf
    assert a["np_float"] == 1.5 and a["np_0d"] == 2.5 and a["bytes"] == "\\xff\x00" and a["set"] == "{3}"
    # Chrome's viewer uses JSON.parse: NaN/inf must not appear as bare numbers.
    export_chrome_json(tmp_path / "t.pftrace", tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    (x,) = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert x["args"]["nan"] == "nan" and x["args"]["inf"] == "inf"


# ---------------------------------------------------------------- atomic files and output directories
class _FullDiskOs:
    """``os`` for :mod:`tracer._atomic` whose ``fdopen`` writes to /dev/full from call ``after`` on."""

    def __init__(self, after: int = 0):
        self.calls, self.after = 0, after

    def fdopen(self, fd, *a, **k):
        self.calls += 1
        if self.calls <= self.after:
            return os.fdopen(fd, *a, **k)
        os.close(fd)
        return open("/dev/full", "wb", buffering=k.get("buffering", -1))

    def __getattr__(self, name):
        return getattr(os, name)


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@needs_dev_full
def test_a_write_on_a_full_disk_names_the_file_keeps_the_old_one_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ttft.json"
    path.write_text("old")
    monkeypatch.setattr(_atomic, "os", _FullDiskOs())
    with pytest.raises(OSError) as info:
        _atomic.write_text(path, "x" * 100_000)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert os.listdir(tmp_path) == ["ttft.json"] and path.read_text() == "old"


def test_default_output_directories_of_runs_started_in_one_second_differ(tmp_path):
    dirs = [_atomic.OutputDir(None, default_root=tmp_path / "spectrace-out") for _ in range(3)]
    paths = [d.path for d in dirs]  # all three share one timestamp
    assert len(set(paths)) == 3 and all(p.is_dir() and p.parent == tmp_path / "spectrace-out" for p in paths)
    assert [p.name for p in paths][1:] == [paths[0].name + "-2", paths[0].name + "-3"]


def test_a_failed_command_leaves_no_directory_and_keeps_files_it_did_not_write(tmp_path):
    nested = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), _atomic.OutputDir(nested, names=["x"]) as out:
        _atomic.write_text(out.file("x"), "half of a result")
        raise RuntimeError("the run failed after writing x")
    assert not (tmp_path / "a").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "x").write_text("a previous run's")
    with pytest.raises(RuntimeError), _atomic.OutputDir(old, names=["x", "y"]) as out:
        out.file("x")  # asked for, never written: the old file stays
        _atomic.write_text(out.file("y"), "new")
        raise RuntimeError
    assert os.listdir(old) == ["x"] and (old / "x").read_text() == "a previous run's"


@pytest.mark.parametrize("command", ["run", "bench"])
def test_out_that_cannot_be_a_directory_is_refused_before_any_work(command, tmp_path, capfd):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    one_line(*main(capfd, command, "--out", a_file), f"--out '{a_file}' is an existing file")
    one_line(*main(capfd, command, "--out", a_file / "sub"), f"'{a_file}' is a file, not a directory")
    if command == "run":
        (tmp_path / "d" / "ttft.json").mkdir(parents=True)
        one_line(*main(capfd, "run", "--out", tmp_path / "d"), f"'{tmp_path / 'd' / 'ttft.json'}' is a directory")
    assert sorted(os.listdir(tmp_path)) == ["a-file"] + (["d"] if command == "run" else [])


def test_bench_out_is_checked_before_the_runs_start(tmp_path, capfd, monkeypatch):
    from spectrace.engines import jobs

    monkeypatch.setattr(jobs, "_bench_base", lambda *a, **k: pytest.fail("a variant ran before --out was checked"))
    (tmp_path / "f").write_text("")
    one_line(*main(capfd, "bench", "--runs", "1", "--out", tmp_path / "f"), "is an existing file")


@needs_dev_full
def test_a_full_disk_during_a_run_is_one_line_and_leaves_no_partial_output(tmp_path):
    """trace.pftrace is written, ttft.json hits ENOSPC: the trace is removed again, and the --out
    directory the run created with it."""
    out = tmp_path / "out"
    code = ("import sys; sys.path.insert(0, 'tests'); from test_bad_input import _FullDiskOs; "
            "from spectrace.tracer import _atomic, cli; _atomic.os = _FullDiskOs(after=1); "
            f"sys.exit(cli.main(['run', '--quiet', '--prompt-len', '64', '--gen-len', '2', '--out', {str(out)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    one_line(r.returncode, r.stderr, f"cannot write {out / 'ttft.json'}: No space left on device")
    assert not out.exists() and os.listdir(tmp_path) == []


def test_report_output_that_is_a_directory_is_one_line(tmp_path, capfd):
    from spectrace.tracer import ttft

    ttft.write(tmp_path / "ttft.json", {"ttft_baseline_s": 0.5})
    (tmp_path / "report.html").mkdir()
    one_line(*main(capfd, "report", tmp_path, "-o", tmp_path / "report.html"), "is a directory")


# ---------------------------------------------------------------- numeric options
def test_a_misspelt_decode_kernel_in_the_environment_is_one_line(tmp_path):
    """``$SPECTRACE_DECODE_KERNELS`` is read when the engines are imported: an unknown name is one
    line naming the variable, the value and the known names, before any work (a subprocess: the
    engines of this process are imported already)."""
    out = spectrace("run", "--out", tmp_path / "run", env={**os.environ, "SPECTRACE_DECODE_KERNELS": "rope+combin"})
    line = one_line(out.returncode, out.stderr, "SPECTRACE_DECODE_KERNELS='rope+combin'", "unknown kernel 'combin'",
                    "known: combine, rope")
    assert line.startswith("spectrace run: ")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,needles", [
    (["run", "--prompt-len", 10**12], ["--prompt-len 1000000000000 is more than", "max_position_embeddings 16384"]),
    (["run", "--prompt-len", 16380], ["--prompt-len asks for 16380 tokens; with --gen-len 16 and --look-ahead 8",
                                      "needs 16404 positions, more than", "16384"]),
    (["run", "--ctx-len", 10**11], ["--ctx-len 100000000000 is more than", "16384"]),
    (["run", "--gen-len", 10**7], ["--gen-len 10000000 is more than", "16384"]),
    (["run", "--look-ahead", 10**6], ["--look-ahead 1000000 is more than", "16384"]),
    (["run", "--prefill-seq-len", 10**6], ["--prefill-seq-len 1000000 is more than", "16384"]),
    (["bench", "--prompt-len", 10**9], ["--prompt-len 1000000000 is more than", "16384"]),
    (["bench", "--warmup", "-1"], ["--warmup must be a non-negative integer (0 for none), got '-1'"]),
    (["bench", "--warmup", "-5"], ["--warmup must be a non-negative integer (0 for none), got '-5'"]),
])
def test_numbers_the_model_cannot_take_are_refused_at_once(argv, needles, tmp_path, capfd):
    t0 = time.monotonic()
    one_line(*main(capfd, *argv, "--out", tmp_path / "out"), *needles)
    assert time.monotonic() - t0 < 60 and not (tmp_path / "out").exists()  # no prompt built, no directory


def test_a_run_the_memory_cannot_hold_is_refused_before_allocation(tmp_path, capfd, monkeypatch):
    from spectrace.engines import jobs, limits

    monkeypatch.setattr(limits, "free_memory", lambda device: (64 << 20, "a test's figure"))
    monkeypatch.setattr(jobs, "_load", lambda *a: pytest.fail("loaded a model past the memory check"))
    line = one_line(*main(capfd, "run", "--ctx-len", 16384, "--prefill-seq-len", 4096, "--out", tmp_path / "o"),
                    "KV cache for 16384 positions", "attention scores per --prefill-seq-len 4096 chunk",
                    "more than the 64 MiB free on cpu (a test's figure)")
    assert "this run needs about" in line


def test_a_prompt_file_longer_than_the_model_is_refused_naming_both_numbers(tmp_path, capfd, no_compile_cache):
    from spectrace.engines.tokenizer import corpus_text

    text = corpus_text()
    prompt = tmp_path / "long.txt"
    prompt.write_text("\n".join([text] * 12))  # ~18300 tokens
    line = one_line(*main(capfd, "run", "--prompt-file", prompt, "--out", tmp_path / "out"),
                    "the prompt has", "more than the base model's (default-base) max_position_embeddings 16384")
    assert int(line.split("the prompt has ")[1].split()[0]) > 16384
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- crafted ttft.json
CRAFTED = {
    "deep-nesting.json": b"[" * 100_000 + b"]" * 100_000,
    "deep-config.json": json.dumps({"config": {"x": json.loads("[" * 40 + "]" * 40)}}).encode(),
    "top-level-list.json": b"[1, 2]",
    "runs-a-string.json": b'{"runs": "all of them"}',
    "bytes-a-string.json": b'{"io": {"spec": {"logits": {"bytes": "many"}}}}',
    "chunk-ms-a-list.json": b'{"runs": [{"chunks": {"spec": [{"index": 0, "ms": []}]}}]}',
    "device-time-rows.json": b'{"device_time": [{"name": "x", "ms": {"a": 1}}]}',
    "idle-gap-ms.json": b'{"device_time": [{"name": "x", "ms": 1, "idle_gaps": [{"ms": "long", "after": "a"}]}]}',
    "idle-gaps-object.json": b'{"device_time": [{"name": "x", "ms": 1, "idle_gaps": {"ms": 1}}]}',
    "huge-int.json": b'{"ttft_baseline_s": ' + b"9" * 5000 + b"}",
    "big-int.json": b'{"prompt_tokens": ' + b"9" * 40 + b"}",
    "nan.json": b'{"ttft_baseline_s": NaN}',
    "infinity.json": b'{"ttft_spec_device_s": 1e999}',
    "not-utf8.json": b'{"config": {"name": "\xff\xfe"}}',
    "empty.json": b"",
    "blank.json": b"  \n\t",
    "cut-short.json": b'{"ttft_baseline_s": 0.5, "io": {',
    "schema.json": b'{"schema": "someone-else/2"}',
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_report_on_a_crafted_ttft_json_is_one_line_naming_the_file(case, tmp_path, capfd):
    run = tmp_path / case.removesuffix(".json")
    run.mkdir()
    (run / "ttft.json").write_bytes(CRAFTED[case])
    line = one_line(*main(capfd, "report", run), run / "ttft.json")
    assert line.startswith("spectrace report: ")
    if case == "cut-short.json":
        assert "not valid JSON" in line and "line 1 column" in line
    assert os.listdir(run) == ["ttft.json"]


# ---------------------------------------------------------------- checkpoints
@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from spectrace.engines import default_pair

    _, base = default_pair()
    dest = tmp_path / "ckpt"
    shutil.copytree(base, dest)
    return dest


def test_a_config_json_value_of_the_wrong_type_names_the_file_and_key(checkpoint, tmp_path, capfd):
    cfg = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": "four"}))
    one_line(*main(capfd, "run", "--base", checkpoint, "--out", tmp_path / "out"),
             checkpoint / "config.json", "num_hidden_layers must be a positive integer, got 'four'")
    (checkpoint / "config.json").write_text(json.dumps({**cfg, "architectures": "LlamaForCausalLM"}))
    one_line(*main(capfd, "run", "--base", checkpoint, "--out", tmp_path / "out"),
             checkpoint / "config.json", "architectures must be a list")


def test_a_truncated_safetensors_file_is_named(checkpoint, tmp_path, capfd, no_compile_cache):
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    one_line(*main(capfd, "run", "--base", checkpoint, "--out", tmp_path / "out"), weights, "truncated")
    weights.write_bytes(data[:5])
    one_line(*main(capfd, "run", "--base", checkpoint, "--out", tmp_path / "out"), weights, "truncated")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- trace, XPlane and OTLP files
@pytest.fixture
def trace_file(tmp_path) -> Path:
    from spectrace.tracer.perfetto import write_pftrace

    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.window("ttft.baseline", engine="base"):
            for i in range(3):
                with tracer.span("prefill.chunk", engine="base", **{"chunk.index": i}):
                    tracer.record_transfer("logits", "d2h", 64, ns=1000)
    write_pftrace(tmp_path / "trace.pftrace", rec)
    return tmp_path / "trace.pftrace"


def test_a_truncated_trace_says_so_and_names_the_file(trace_file, tmp_path, capfd):
    data = trace_file.read_bytes()
    cut = tmp_path / "cut.pftrace"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=rf"{cut} is truncated: packet \d+ at byte \d+ needs \d+ bytes"):
        Trace.load(cut)
    one_line(*main(capfd, "merge", cut, tmp_path / "none.xplane.pb", "-o", tmp_path / "m.pftrace"),
             "spectrace merge: ", f"{cut} is truncated")
    assert sorted(os.listdir(tmp_path)) == ["cut.pftrace", "trace.pftrace"]


def test_a_malformed_xplane_names_the_file_and_keeps_the_parsers_log_off_stderr(trace_file, tmp_path, capfd):
    from spectrace.tracer.xplane import read_xplane

    bad = tmp_path / "host.xplane.pb"
    bad.write_bytes(b"\x0a\x05\x12\x03\xff\xfe\xfd" * 3)  # XPlane.name with invalid UTF-8
    capfd.readouterr()
    with pytest.raises(ValueError, match=rf"{bad} is not an XPlane file"):
        read_xplane(bad)
    assert capfd.readouterr().err == ""  # jaxlib's "E1201 ... wire_format_lite.cc" lines are kept out
    one_line(*main(capfd, "merge", trace_file, bad, "-o", tmp_path / "m.pftrace"), f"{bad} is not an XPlane file")
    assert not (tmp_path / "m.pftrace").exists()


@pytest.mark.parametrize("doc,where", [
    ({"resourceSpans": {"no": "list"}}, "resourceSpans must be a JSON array"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "a", "startTimeUnixNano": "soon"}]}]}]},
     "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano must be an integer, got 'soon'"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "a", "attributes": [
        {"key": "io.logits.bytes", "value": {"stringValue": "many"}}]}]}]}]}, "resourceSpans[0].scopeSpans[0].spans[0]"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": ["x"]}]}]}]}, "spans[0].spanId must be a string"),
])
def test_malformed_otlp_json_names_the_file_and_the_key(doc, where, tmp_path):
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError) as info:
        Trace.load(path)
    assert str(path) in str(info.value) and where in str(info.value), info.value
    path.write_text('{"resourceSpans": [' * 5000)
    with pytest.raises(ValueError, match=rf"{path}: (not OTLP JSON|OTLP JSON nested too deeply)"):
        Trace.load(path)


# ---------------------------------------------------------------- Ctrl-C
def test_a_ctrl_c_swallowed_by_a_gc_callback_is_raised_again():
    """The reported bug: jax registers ``_xla_gc_callback`` in ``gc.callbacks``; a KeyboardInterrupt
    raised inside a gc callback is printed as "Exception ignored" and lost, so a Ctrl-C in the
    first second of a run (imports: many collections) let the run finish with exit 0."""
    import gc

    from spectrace.tracer.errors import check_interrupt, handle_interrupts

    def ctrl_c_during_collection(phase, info):
        if phase == "start" and fired:
            fired.pop()
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the callback

    gc.callbacks.append(ctrl_c_during_collection)
    try:
        with handle_interrupts():
            fired = [1]
            gc.collect()  # returns normally: the interrupt was swallowed, as in the bug
            with pytest.raises(KeyboardInterrupt):
                check_interrupt()  # ... but it was counted, and every step of a run checks
    finally:
        gc.callbacks.remove(ctrl_c_during_collection)


@pytest.mark.parametrize("after_s", [0.5, 3.0])
def test_ctrl_c_at_any_moment_of_a_run_is_exit_130_with_no_output(after_s, tmp_path):
    """0.5 s: JAX is being imported; 3 s: loading or compiling (a default run takes ~8 s)."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "spectrace.tracer.cli", "run", "--quiet", "--out", str(out)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    assert p.poll() is None, "the run ended before the interrupt"
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert stderr.strip() == "spectrace: interrupted" and stdout == ""
    assert not out.exists(), sorted(os.listdir(out))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- quiet by default
def test_a_quiet_run_prints_only_the_trace_path_and_no_pytorch_notice(tmp_path):
    out = tmp_path / "out"
    r = spectrace("run", "--quiet", "--prompt-len", "64", "--gen-len", "2", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [ln for ln in r.stderr.splitlines() if "PyTorch" in ln], r.stderr
    assert r.stdout.strip() == str(out / "trace.pftrace")
    assert sorted(os.listdir(out)) == ["report.html", "trace.pftrace", "ttft.json"]  # no stale *.tmp
