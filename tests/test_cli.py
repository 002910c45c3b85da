"""The spectrace command as a user meets it: a subprocess, its exit code, its files, its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT
from spectrace.tracer import device_time
from spectrace.tracer.ttft import TTFT_FIELDS


def spectrace(*args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spectrace.tracer.cli", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=None if env is None else {**os.environ, **env})


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("argv,needles", [
    (["run", "--no-such-option"], ["unrecognized arguments: --no-such-option"]),
    (["run", "--keep", "0"], ["--keep must be in (0, 1], got '0'"]),
    (["run", "--keep", "1.5"], ["--keep must be in (0, 1], got '1.5'"]),
    (["run", "--runs", "0"], ["--runs must be a positive integer, got '0'"]),
    (["bench", "--runs", "0"], ["--runs must be a positive integer, got '0'"]),
    (["run", "--base", "./no/such/checkpoint"], ["--base './no/such/checkpoint' is not a checkpoint directory"]),
    (["run", "--draft", "no-such-preset"], ["no-such-preset"]),
    (["run", "--prompt-file", "/no/such/prompt.txt"], ["cannot read --prompt-file '/no/such/prompt.txt'"]),
    (["run", "--scoring", "gpu"], ["invalid choice: 'gpu'"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (["merge", "/no/such.pftrace", "/no/such.xplane.pb", "-o", "/tmp/x.pftrace"], ["does not exist"]),
    (["report", "/no/such/dir"], ["/no/such/dir"]),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(argv, needles):
    _one_line_error(spectrace(*argv), *needles)


def test_unwritable_cache_dir_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = spectrace("run", "--quiet", "--out", str(tmp_path / "out"), env={"SPECTRACE_CACHE_DIR": str(blocker / "cache")})
    _one_line_error(r, "$SPECTRACE_CACHE_DIR", str(blocker / "cache" / "default"), "writable directory")


def test_unreadable_prompt_file(tmp_path):
    p = tmp_path / "prompt.txt"
    p.write_bytes(b"\xff\xfe\x00bad")
    _one_line_error(spectrace("run", "--prompt-file", str(p), "--out", str(tmp_path / "out")), "cannot read --prompt-file")
    p.write_text("   \n")
    _one_line_error(spectrace("run", "--prompt-file", str(p), "--out", str(tmp_path / "out")), "is empty")


def test_run_with_no_arguments_writes_the_three_files(tmp_path):
    r = spectrace("run", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("trace.pftrace", "ttft.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "ttft.json").read_text())
    missing = [f for f in TTFT_FIELDS if f not in doc]
    assert not missing
    assert doc["ttft_speculative_s"] == pytest.approx(
        doc["ttft_spec_device_s"] + doc["ttft_host_scoring_s"] + doc["ttft_base_pruned_only_s"], rel=1e-6)
    assert doc["io"]["spec"]["prefill_queries"]["bytes"] > 0
    assert len(doc["chunks"]["spec"]) == doc["num_chunks"]
    assert len(doc["slowest_chunks"]) == 3
    assert "speculative TTFT" in r.stdout and "ui.perfetto.dev" in r.stdout
    assert "prefill_queries" in r.stdout

    # The trace decodes and holds the same per-category bytes as ttft.json.
    from spectrace.tracer.testing import Trace

    t = Trace.load(out / "trace.pftrace")
    spec_window = t.one("ttft.spec_device")
    assert t.bytes("prefill_queries", span=spec_window) == doc["io"]["spec"]["prefill_queries"]["bytes"]

    # spectrace report rebuilds the page from ttft.json.
    (out / "report.html").unlink()
    r = spectrace("report", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").stat().st_size > 0


def test_bench_prints_seed003_table_and_writes_json(tmp_path):
    r = spectrace("bench", "--runs", "2", "--warmup", "0", "--prompt-len", "64", "--gen-len", "4",
                  "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ")]
    names = [ln.split("|")[1].strip() for ln in rows[1:]]
    assert names == ["baseline (baseline)", "decode_python_loop", "prefill_python_loop", "qkv_separate",
                     "attention_batched", "attention_vmap", "last_chunk_full"]
    assert "Δ total s (%)" in rows[0] and "±" in rows[1]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["baseline"] == "baseline" and doc["phases"] == ["prefill", "generation", "total"]
    assert all(v["n"] == 2 for v in doc["variants"])


def test_bench_scoring_set_compares_host_and_device(tmp_path):
    r = spectrace("bench", "--set", "scoring", "--runs", "1", "--warmup", "0", "--prompt-len", "300",
                  "--gen-len", "2", "--format", "json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert [v["name"] for v in doc["variants"]] == ["baseline", "device_scoring"]
    assert "ttft_speculative_s" in doc["phases"]


def test_run_with_xplane_attributes_device_time_to_every_chunk(tmp_path):
    out = tmp_path / "out"
    r = spectrace("run", "--xplane", "--prompt-len", "600", "--scoring", "device", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "ttft.json").read_text())
    assert doc["alignment"]["pairs"] > 0 and doc["alignment"]["max_us"] < 1000
    rows = doc["device_time"]
    windows = [x["name"] for x in rows if x["depth"] == 0]
    assert windows == ["ttft.baseline", "ttft.spec_device", "ttft.host_scoring", "ttft.base_pruned", "decode"]
    chunks = [x for x in rows if x["name"] == "prefill.chunk"]
    assert len(chunks) == 2 * doc["num_chunks"] + doc["num_chunks_pruned"]
    for x in rows:
        assert 0 <= x["device_busy_ms"] <= x["ms"] * 1.001 + 0.01, x
    for c in chunks:  # every chunk ran XLA ops, and the heaviest are listed
        assert c["device_ops"] > 0 and c["device_busy_ms"] > 0 and c["top_ops"], c
    for x in rows:  # the longest idle gaps lie inside the span and add up to no more than its idle time
        gaps = x["idle_gaps"]
        assert sum(g["ms"] for g in gaps) <= x["device_idle_ms"] + 0.01, x
        assert all(0 <= g["at_ms"] and g["at_ms"] + g["ms"] <= x["ms"] + 0.01 for g in gaps), x
        assert [g["ms"] for g in gaps] == sorted((g["ms"] for g in gaps), reverse=True)
    assert "Device time per span" in r.stdout
    listed = device_time.longest_gaps(rows)
    assert ("Longest device idle gaps" in r.stdout) == bool(listed)
    from spectrace.tracer.testing import Trace

    trace = Trace.load(out / "trace.pftrace")
    # Slices carry device time (README's example reads the look-ahead's). The look-ahead is queued
    # while the draft's last chunk runs, so on a busy CPU its ops may all finish before its span
    # opens: bounds there, and ops, busy time and the top op on every draft chunk, which the host
    # waits on inside its span.
    la = trace.one("lookahead")
    assert 0 <= la["device.busy_ms"] <= la.duration_ms and la["device.ops"] >= 0
    assert la["device.idle_ms"] <= la.duration_ms + 1e-6
    draft_chunks = trace.all("prefill.chunk", engine="spec")
    assert len(draft_chunks) == doc["num_chunks"]
    for chunk in draft_chunks:
        assert 0 < chunk["device.busy_ms"] <= chunk.duration_ms and chunk["device.ops"] > 0 and chunk["device.top_op"]
    # the longest idle gap is on the slice too, within the slice's idle time
    assert 0 < la["device.idle_gap_ms"] <= la["device.idle_ms"] + 1e-6 and " ms at +" in la["device.idle_gap"]
    html = (out / "report.html").read_text()
    assert "Device time per span" in html and 'data-mark="device busy"' in html
    assert ("Longest device idle gaps" in html) == bool(listed)
    # spectrace merge of a trace with its own process's XPlane prints the same per-span table.
    r = spectrace("merge", str(out / "trace.pftrace"), str(out / "xplane"), "-o", str(out / "merged.pftrace"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Device time per span" in r.stdout and "prefill.chunk #0 [spec]" in r.stdout


def test_run_keeps_compiled_programs_in_the_cache_unless_jax_has_one(tmp_path):
    cache = tmp_path / "spectrace-cache"
    r = spectrace("run", "--quiet", "--prompt-len", "200", "--out", str(tmp_path / "a"),
                  env={"SPECTRACE_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert any((cache / "jax").iterdir())  # the next run loads these instead of compiling
    user = tmp_path / "users-own"
    r = spectrace("run", "--quiet", "--prompt-len", "200", "--out", str(tmp_path / "b"),
                  # The user's cache is the user's to configure: JAX's own 1 s minimum compile time
                  # would leave it empty on a quiet machine, where these programs compile faster.
                  env={"SPECTRACE_CACHE_DIR": str(tmp_path / "other"), "JAX_COMPILATION_CACHE_DIR": str(user),
                       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert any(user.iterdir()) and not (tmp_path / "other" / "jax").exists()


def test_layers_by_attention_type_on_gemma_and_refused_on_llama(tmp_path):
    # The tiny Gemma pair has sliding and full layers: both selections run and are recorded.
    for layers in ("sliding", "full"):
        r = spectrace("run", "--base", "gemma-tiny-base", "--draft", "gemma-tiny-draft", "--layers", layers,
                      "--prompt-len", "300", "--quiet", "--out", str(tmp_path / layers))
        assert r.returncode == 0, r.stderr[-3000:]
        cfg = json.loads((tmp_path / layers / "ttft.json").read_text())["config"]
        assert cfg["layers"] == layers
    # The default Llama draft has no sliding layers: one line, exit 2, no output directory.
    r = spectrace("run", "--layers", "sliding", "--prompt-len", "300", "--quiet", "--out", str(tmp_path / "llama"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "spectrace: layers='sliding': the draft has no sliding-attention layers"]
    assert not (tmp_path / "llama").exists()


def test_device_lists_and_ranges_parse_and_bad_ones_are_one_line():
    import argparse

    from spectrace.tracer.cli import _devices

    assert _devices("0") == [0]
    assert _devices("0-3") == [0, 1, 2, 3]
    assert _devices("4-7") == [4, 5, 6, 7]
    assert _devices("0,2-3, 6") == [0, 2, 3, 6]
    for bad, said in (("x", "ranges like"), ("3-1", "run upward"), ("-1", "ranges like"), (",", "names no device"),
                      ("0-2,1", "more than once")):
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            _devices(bad)


def test_devices_that_do_not_exist_are_refused_naming_what_exists():
    import jax

    from spectrace.engines.limits import devices_for
    from spectrace.tracer.errors import UserError

    n = len(jax.devices())
    assert devices_for([0], "base") == jax.devices()[:1]
    with pytest.raises(UserError, match=rf"names device\(s\) \[{n}\] that do not exist; this machine has {n} device"):
        devices_for(list(range(n + 1)), "base")
