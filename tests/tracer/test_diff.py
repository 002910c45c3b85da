"""``spectrace diff`` (issue 14): each injected cause is found, with its size, and nothing else.

The traces are recorded by the tracer itself (windows, spans, ``record_transfer(ns=...)``),
written with ``write_pftrace`` and ``tracer.ttft``, and read back by ``spectrace diff`` from
the directories, as a user's would be. A fake ``perf_counter_ns`` (patched into the recorder)
advances only when the synthetic pipeline says, so every span lasts exactly what the test
chose. Tolerance of the injected-cause tests: the size found is within 0.01 ms + 1% of the
injected one, the unexplained rest within 0.01 ms of its true value; with simulated noise
(n = 5 runs a side, 0.2 ms jitter per step) within 1 ms (about 4 standard errors).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from spectrace import tracer
from spectrace.tracer import _capture, _core, _io, ttft
from spectrace.tracer import cli, diff
from spectrace.tracer._diff_stats import bh, compare_stats, holm, mad_outliers, t_critical, t_two_sided_p
from spectrace.tracer.benchstats import Stat, compare as bench_compare, summarize, to_json
from spectrace.tracer.perfetto import write_pftrace

from helpers import ROOT


# ---------------------------------------------------------------- a synthetic pipeline on a fake clock
class FakeClock:
    def __init__(self):
        self.now = time.perf_counter_ns()

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += round(ms * 1e6)


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    for mod in (_core, _io, _capture):
        monkeypatch.setattr(mod, "perf_counter_ns", c)
    return c


@dataclasses.dataclass(frozen=True)
class Fake:
    """What one run of the synthetic pipeline does; every injected cause is a field."""

    base_chunks: int = 4
    base_chunk_ms: float = 10.0
    spec_chunks: int = 4
    chunk_ms: float = 2.0
    delays: tuple = ()  # ((spec chunk index, extra ms), ...)
    queries: bool = True  # prefill_queries d2h after every draft chunk (host scoring)
    past_key_ms: float = 1.0  # the retained past_key copy after the last draft chunk
    extra: tuple = ()  # ((binding, direction, bytes, ms), ...) copied in the last draft chunk
    gap_ms: float = 0.0  # host work inside ttft.spec_device, between bind and chunk 0
    between_ms: float = 0.0  # host work between ttft.spec_device and ttft.host_scoring
    jitter_ms: float = 0.0  # simulated noise: every step gets N(0, jitter) ms more
    device: bool = False  # device.busy_ms / device.idle_ms on the chunks (an --xplane trace)
    delay_busy: bool = True  # a delayed chunk's extra time is device-busy (else idle)
    model: str = "fake-base"
    prompt_tokens: int = 500
    scoring: str = "host"


def _run(cfg: Fake, clk: FakeClock, rng) -> list:
    def step(ms: float) -> float:
        ms = max(ms + (rng.normal(0.0, cfg.jitter_ms) if cfg.jitter_ms else 0.0), 0.0)
        clk.advance(ms)
        return ms

    def copy(binding, direction, nbytes, ms):
        tracer.record_transfer(binding, direction, nbytes, ns=round(step(ms) * 1e6))

    def chunk(engine, i, ms, last_copies, extra_ms=0.0):
        with tracer.span("prefill.chunk", engine=engine, **{"chunk.index": i, "chunk.tokens": 128}) as s:
            step(ms)
            clk.advance(extra_ms)
            for c in last_copies:
                copy(*c)
            if cfg.device:
                busy = 0.8 * ms + (extra_ms if cfg.delay_busy else 0.0)
                s.set("device.busy_ms", busy)
                s.set("device.idle_ms", ms + extra_ms - busy + sum(c[3] for c in last_copies))

    model = {"gen_ai.request.model": cfg.model}
    with tracer.capture() as rec:
        with tracer.window("ttft.baseline", engine="base", **model):
            with tracer.span("tokenize", stage="bootstrap"):
                step(1.0)
            with tracer.span("bind"):
                copy("other", "h2d", 3084, 0.3)
            for i in range(cfg.base_chunks):
                chunk("base", i, cfg.base_chunk_ms, [("logits", "d2h", 5212, 0.05)] if i == cfg.base_chunks - 1 else [])
        with tracer.window("ttft.spec_device", engine="spec", **{"gen_ai.request.model": "fake-draft"}):
            with tracer.span("tokenize", stage="bootstrap"):
                step(1.0)
            with tracer.span("bind"):
                copy("other", "h2d", 3084, 0.3)
            step(cfg.gap_ms)
            delays = dict(cfg.delays)
            for i in range(cfg.spec_chunks):
                copies = [("prefill_queries", "d2h", 1024, 0.02)] if cfg.queries else []
                if i == cfg.spec_chunks - 1:
                    copies += [("past_key.0_RetainedState", "d2h", 1 << 20, cfg.past_key_ms)] if cfg.queries else []
                    copies += list(cfg.extra)
                chunk("spec", i, cfg.chunk_ms, copies, delays.get(i, 0.0))
            with tracer.span("lookahead"):
                step(1.5)
        step(cfg.between_ms)
        with tracer.window("ttft.host_scoring", engine="spec"):
            for name, ms in (("score.assemble", 0.2), ("score.compute", 0.6), ("score.select", 0.1)):
                with tracer.span(name):
                    step(ms)
        with tracer.window("ttft.base_pruned", engine="base", **model):
            with tracer.span("bind"):
                copy("other", "h2d", 1028, 0.2)
            chunk("base", 0, 5.0, [("logits", "d2h", 5212, 0.05)])
    return rec.spans


def _result(spans, cfg: Fake) -> dict:
    d = {s.name: s.duration_ns / 1e9 for s in spans}
    spec, host, pruned = d["ttft.spec_device"], d["ttft.host_scoring"], d["ttft.base_pruned"]
    return {"ttft_spec_device_s": spec, "t_assemble_s": d["score.assemble"], "t_score_s": d["score.compute"],
            "t_select_s": d["score.select"], "ttft_host_scoring_s": host, "ttft_spec_only_s": spec + host,
            "ttft_base_pruned_only_s": pruned, "ttft_speculative_s": spec + host + pruned,
            "ttft_baseline_s": d["ttft.baseline"], "prompt_tokens": cfg.prompt_tokens, "padded_len": 512,
            "num_chunks": cfg.spec_chunks, "kept_tokens": 64, "padded_len_pruned": 128, "num_chunks_pruned": 1}


def make_run(path, clk: FakeClock, cfg: Fake = Fake(), *, runs: int = 1, seed: int = 0):
    """A run directory as ``spectrace run`` writes it: trace.pftrace + ttft.json (``runs`` runs)."""
    rng = np.random.default_rng(seed)
    previous = tracer.configure(enabled=True)
    try:
        per_run = [_run(cfg, clk, rng) for _ in range(runs)]
    finally:
        tracer.configure(**previous)
    path.mkdir(parents=True, exist_ok=True)
    write_pftrace(path / "trace.pftrace", [s for spans in per_run for s in spans])
    config = {"base": cfg.model, "draft": "fake-draft", "scoring": cfg.scoring, "runs": runs,
              "prompt": f"built-in, {cfg.prompt_tokens} tokens"}
    ttft.write(path / "ttft.json", ttft.build([ttft.run_entry(_result(s, cfg), s) for s in per_run],
                                              config=config, versions={}, devices={}))
    return str(path)


def one(a, b=None, **kw) -> dict:
    (c,) = diff.diff_paths(a, b, **kw)["comparisons"]
    return c


def part(c: dict, window: str, name: str) -> dict:
    w = next(w for w in c["windows"] if w["name"] == window)
    return next(p for p in w["parts"] if p["name"] == name)


def io_row(c: dict, name: str) -> dict:
    return next(r for r in c["io"] if r["name"] == name)


def close(found: float, injected: float, rel: float = 0.01, abs_ms: float = 0.01) -> bool:
    return abs(found - injected) <= abs_ms + rel * abs(injected)


def all_rows(c: dict):
    for w in c["windows"]:
        yield w
        for p in w["parts"]:
            yield p
            yield from p["io"]
    yield from c["parts"]
    yield from c["io"]
    yield from c["between_windows"]


# ---------------------------------------------------------------- the statistics
def test_student_t_matches_the_tables():
    assert abs(t_two_sided_p(2.306004, 8) - 0.05) < 1e-6
    assert abs(t_two_sided_p(2.776445, 4) - 0.05) < 1e-6
    assert abs(t_two_sided_p(63.65674, 1) - 0.01) < 1e-6
    assert abs(t_critical(0.05, 8) - 2.306004) < 1e-5
    t = compare_stats(summarize([1, 2, 3, 4, 5]), summarize([3, 4, 5, 6, 7]))  # scipy: t=-2, p=0.0805
    assert t.method == "welch" and abs(t.t + 2) < 1e-12 and abs(t.p - 0.080516) < 1e-5
    assert compare_stats(Stat(5, 0, 5), Stat(5, 0, 5)).p == 1.0 and compare_stats(Stat(6, 0, 5), Stat(5, 0, 5)).p == 0.0
    assert compare_stats(Stat(1, 0, 1), Stat(2, 0, 1)).p is None  # one run a side: nothing to test
    assert holm([0.01, 0.04, None, 0.03], 0.05) == [True, False, None, False]
    assert bh([0.01, 0.04, None, 0.03], 0.05) == [True, True, None, True]  # 0.04 <= 3/3 · 0.05
    assert bh([0.01, 0.5, 0.03], 0.05) == [True, False, True] and bh([0.2, 0.5], 0.05) == [False, False]
    assert mad_outliers([2, 2.1, 1.9, 17, 2]) == [(3, 17, 15)]
    assert mad_outliers([10, 17, 15]) == [] and mad_outliers([2, 30]) == []  # prefix growth; too few chunks


# ---------------------------------------------------------------- no cause, no explanation
def test_a_run_against_itself_explains_nothing_and_flags_nothing(tmp_path, clock):
    a = make_run(tmp_path / "a", clock, runs=1)
    c = one(a, a)
    assert c["total"]["delta_ms"] == 0 and all(r["delta_ms"] == 0 for r in all_rows(c))
    assert c["explanation"][1:] == ["the two sides are identical: nothing to explain"]
    assert c["mismatches"] == [] and c["chunks"]["outliers"] == [] or all(
        o["delta_ms"] == 0 for o in c["chunks"]["outliers"])
    many = make_run(tmp_path / "many", clock, Fake(jitter_ms=0.2), runs=5)
    c = one(many, many)
    assert c["statistic"]["name"] == "welch" and not any(r["flag"] for r in all_rows(c)) and not c["total"]["flag"]


def test_two_noisy_runs_of_one_setup_flag_nothing(tmp_path, clock):
    a = make_run(tmp_path / "a", clock, Fake(jitter_ms=0.2), runs=5, seed=1)
    b = make_run(tmp_path / "b", clock, Fake(jitter_ms=0.2), runs=5, seed=2)
    c = one(a, b)
    assert abs(c["total"]["delta_ms"]) < 1.5
    assert [r["name"] for r in all_rows(c) if r["flag"]] == []
    assert c["explanation"][1].startswith("no span, category or chunk explains the difference beyond noise")


# ---------------------------------------------------------------- injected causes
def test_a_slower_transfer_is_named_with_its_size(tmp_path, clock):
    b = make_run(tmp_path / "b", clock)
    a = make_run(tmp_path / "a", clock, Fake(past_key_ms=21.0))  # +20 ms on the same 1 MiB
    c = one(a, b)
    assert close(c["total"]["delta_ms"], 20)
    r = io_row(c, "past_key d2h")
    assert close(r["delta_ms"], 20) and r["delta_bytes"] == 0 and r["only"] is None
    chunks = part(c, "ttft.spec_device", "chunks")
    assert close(chunks["delta_ms"], 20)
    rest = {x["name"]: x["delta_ms"] for x in chunks["io"]}
    assert close(rest["past_key"], 20) and abs(rest["compute & rest"]) < 0.01
    assert abs(c["unexplained"]["delta_ms"]) < 0.01
    said = next(s for s in c["explanation"] if "past_key d2h" in s)
    assert said.startswith("+20.00 ms of the +20.00 ms difference is past_key d2h: the same 1.0 MB on both sides")
    assert "0.05 GB/s (A) vs 1.05 GB/s (B)" in said


def test_a_slower_transfer_is_flagged_over_noise_and_nothing_else(tmp_path, clock):
    b = make_run(tmp_path / "b", clock, Fake(jitter_ms=0.2), runs=5, seed=3)
    a = make_run(tmp_path / "a", clock, Fake(jitter_ms=0.2, past_key_ms=21.0), runs=5, seed=4)
    c = one(a, b)
    assert c["total"]["flag"] and close(c["total"]["delta_ms"], 20, rel=0, abs_ms=1.0)
    flagged = {r["name"] for r in all_rows(c) if r["flag"]}
    assert flagged == {"ttft.spec_device", "chunks", "past_key", "past_key d2h"}, flagged
    assert close(io_row(c, "past_key d2h")["delta_ms"], 20, rel=0, abs_ms=1.0)
    assert any("past_key d2h" in s and "p = " in s for s in c["explanation"])
    assert "Welch's t" in c["statistic"]["description"]


def test_one_delayed_chunk_is_an_outlier_of_the_right_size(tmp_path, clock):
    b = make_run(tmp_path / "b", clock, Fake(spec_chunks=6))
    a = make_run(tmp_path / "a", clock, Fake(spec_chunks=6, delays=((2, 15.0),)))
    c = one(a, b)
    (o,) = c["chunks"]["outliers"]
    assert (o["side"], o["window"], o["index"]) == ("A", "ttft.spec_device", 2)
    assert close(o["excess_ms"], 15) and close(o["delta_ms"], 15) and close(o["other_ms"], 2.0)
    assert close(part(c, "ttft.spec_device", "chunks")["delta_ms"], 15)
    assert abs(c["unexplained"]["delta_ms"]) < 0.01
    assert any(s.startswith("chunk outlier: A ttft.spec_device chunk #2 (128 tokens) took 17.0") for s in c["explanation"])
    assert "k·MAD" in c["chunks"]["rule"]


def test_host_work_between_spans_is_the_unexplained_rest_and_located(tmp_path, clock):
    b = make_run(tmp_path / "b", clock)
    a = make_run(tmp_path / "a", clock, Fake(gap_ms=7.0))
    c = one(a, b)
    assert close(c["total"]["delta_ms"], 7) and close(c["unexplained"]["delta_ms"], 7)
    assert close(part(c, "ttft.spec_device", "host time between spans")["delta_ms"], 7)
    assert all(abs(p["delta_ms"]) < 0.01 for w in c["windows"] for p in w["parts"] if p["name"] != "host time between spans")
    last = c["explanation"][-1]
    assert last.startswith("unexplained (host time between spans, in no span): +7.00 ms (100% of the difference)")
    assert "ttft.spec_device, bind → prefill.chunk #0: +7.00 ms" in last


def test_host_work_between_windows_is_named_outside_the_ttft(tmp_path, clock):
    b = make_run(tmp_path / "b", clock)
    a = make_run(tmp_path / "a", clock, Fake(between_ms=5.0))
    c = one(a, b)
    assert abs(c["total"]["delta_ms"]) < 0.01  # the TTFT fields sum the windows: the gap is not in them
    r = next(r for r in c["between_windows"] if r["name"] == "ttft.spec_device → ttft.host_scoring")
    assert close(r["delta_ms"], 5)
    assert any(s.startswith("host time between the windows ttft.spec_device → ttft.host_scoring: +5.00 ms")
               for s in c["explanation"])


def test_a_category_on_one_side_only_is_named_whatever_its_time(tmp_path, clock):
    b = make_run(tmp_path / "b", clock)
    a = make_run(tmp_path / "a", clock, Fake(extra=(("past_value.3", "d2h", 4_000_000, 3.0),)))
    c = one(a, b)
    r = io_row(c, "past_value d2h")
    assert r["only"] == "a" and r["a"]["bytes"] == 4_000_000 and r["a"]["count"] == 1 and close(r["delta_ms"], 3)
    assert close(r["a"]["gbps"], 4e6 / 3.0 / 1e6)
    said = next(s for s in c["explanation"] if "past_value d2h" in s)
    assert said == "+3.00 ms of the +3.00 ms difference is past_value d2h: 4.0 MB in 1 copy at 1.33 GB/s, only in A"
    # Device scoring against host scoring: the queries and the retained keys stay on the device.
    d = make_run(tmp_path / "d", clock, Fake(queries=False))
    c = one(b, d)
    assert {r["name"]: r["only"] for r in c["io"] if r["only"]} == {"prefill_queries d2h": "a", "past_key d2h": "a"}
    assert any("prefill_queries d2h: 4.1 kB in 4 copies" in s and s.endswith("only in A") for s in c["explanation"])


def test_device_busy_and_idle_say_what_changed(tmp_path, clock):
    b = make_run(tmp_path / "b", clock, Fake(device=True))
    busy = make_run(tmp_path / "busy", clock, Fake(device=True, delays=((1, 8.0),)))
    idle = make_run(tmp_path / "idle", clock, Fake(device=True, delays=((1, 8.0),), delay_busy=False))
    for a, verdict, field in ((busy, "compute got slower", "busy"), (idle, "the device sat idle longer", "idle")):
        c = one(a, b)
        d = next(d for d in c["device"] if d["name"] == "ttft.spec_device › chunks")
        assert close(d[field]["delta_ms"], 8) and abs(d["idle" if field == "busy" else "busy"]["delta_ms"]) < 0.01
        said = next(s for s in c["explanation"] if s.startswith("ttft.spec_device › chunks"))
        assert verdict in said, said


# ---------------------------------------------------------------- inputs that differ
def test_mismatched_inputs_are_compared_and_the_mismatch_is_stated(tmp_path, clock):
    a = make_run(tmp_path / "a", clock, Fake(spec_chunks=6, prompt_tokens=700, model="other-base"))
    b = make_run(tmp_path / "b", clock, Fake(spec_chunks=4), runs=2)
    c = one(a, b)
    m = "\n".join(c["mismatches"])
    assert "chunk counts differ in ttft.spec_device: 6 (A) vs 4 (B); chunk-by-chunk comparison skipped" in m
    assert "prompts differ: prompt_tokens 700 (A) vs 500 (B)" in m
    assert "setup differs: base is 'other-base' in A, 'fake-base' in B" in m
    assert "models differ in ttft.base_pruned: other-base (A) vs fake-base (B)" in m
    assert "A has 1 runs, B 2" in m
    assert close(part(c, "ttft.spec_device", "chunks")["delta_ms"], 4.0)  # totals still compared: 2 more chunks
    assert all(not w["matched"] for w in c["chunks"]["windows"] if w["window"] == "ttft.spec_device")
    assert c["statistic"]["name"] == "prediction"


def test_passes_of_one_run_compare_different_windows(tmp_path, clock):
    a = make_run(tmp_path / "a", clock)
    c = one(a, passes=["speculative", "baseline"])
    assert (c["a"]["label"], c["b"]["label"]) == ("speculative", "baseline") and not c["matched_windows"]
    assert {w["name"]: w["only"] for w in c["windows"]} == {"ttft.spec_device": "a", "ttft.host_scoring": "a",
                                                            "ttft.base_pruned": "a", "ttft.baseline": "b"}
    chunks = next(p for p in c["parts"] if p["name"] == "chunks")
    assert (chunks["count_a"], chunks["count_b"]) == (5, 4) and close(chunks["delta_ms"], (4 * 2 + 4 * 0.02 + 1.0 + 5.05) - 40.05)
    assert any("different passes" in m for m in c["mismatches"])
    assert c["explanation"][0].startswith("the speculative TTFT is 0.")
    assert one(a, passes=["spec", "baseline"])["a"]["windows"] == ["ttft.spec_device"]  # seed 000's question
    doc = json.loads((tmp_path / "a" / "ttft.json").read_text())
    lines = diff.run_summary(doc, tmp_path / "a").splitlines()
    assert lines[0].startswith("the speculative TTFT is 0.") and "chunks:" in lines[1]
    assert lines[-1].endswith("--passes speculative baseline: span by span)")


def test_bench_outputs_are_compared_by_welch_t_from_mean_std_n(tmp_path):
    rng = np.random.default_rng(5)

    def runs(spec_ms):
        out = []
        for _ in range(5):
            s, h, p = (rng.normal(spec_ms, 0.5) / 1e3, rng.normal(4, 0.2) / 1e3, rng.normal(34, 0.5) / 1e3)
            out.append({"ttft_spec_device_s": s, "ttft_host_scoring_s": h, "ttft_base_pruned_only_s": p,
                        "ttft_speculative_s": s + h + p, "ttft_baseline_s": rng.normal(600, 5) / 1e3})
        return out

    for name, spec_ms in (("before", 150.0), ("after", 120.0)):
        res = bench_compare({"baseline": runs(spec_ms), "device_scoring": runs(spec_ms - 60)}, phases=diff_phases())
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench.json").write_text(json.dumps(to_json(res)))
    doc = diff.diff_paths(str(tmp_path / "before"), str(tmp_path / "after"))
    assert [c["a"]["pass"] for c in doc["comparisons"]] == ["baseline", "device_scoring"]
    for c in doc["comparisons"]:
        w = {x["name"]: x for x in c["windows"]}
        assert w["ttft.spec_device"]["flag"] and close(w["ttft.spec_device"]["delta_ms"], 30, rel=0, abs_ms=1.5)
        assert not w["ttft.base_pruned"]["flag"] and not w["ttft.host_scoring"]["flag"]
    within = one(str(tmp_path / "after"), variants=["baseline", "device_scoring"])
    assert close(within["total"]["delta_ms"], 60, rel=0, abs_ms=1.5) and within["total"]["flag"]


def diff_phases():
    from spectrace.tracer.benchstats import TTFT_PHASES

    return TTFT_PHASES


# ---------------------------------------------------------------- the command
def test_the_command_prints_and_writes_json_and_html(tmp_path, clock, capsys):
    b = make_run(tmp_path / "b", clock)
    a = make_run(tmp_path / "a", clock, Fake(past_key_ms=21.0))
    rc = cli.main(["diff", a, b, "--json", str(tmp_path / "d.json"), "-o", str(tmp_path / "d.html")])
    out = capsys.readouterr().out
    assert rc == 0 and "Explanation" in out and "past_key d2h" in out and "Where the +20.000 ms are" in out
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["schema"] == "spectrace.diff/1" and close(doc["comparisons"][0]["total"]["delta_ms"], 20)
    html = (tmp_path / "d.html").read_text()
    assert "Content-Security-Policy" in html and 'data-chart="diff-parts"' in html and "<script" not in html
    assert "past_key d2h" in html and 'data-chart="diff-windows"' in html


def test_a_directory_of_runs_is_one_side_and_the_page_escapes_what_it_shows(tmp_path, clock):
    for i in range(3):
        make_run(tmp_path / "many" / f"run{i}", clock, Fake(jitter_ms=0.2), seed=10 + i)
    odd = make_run(tmp_path / "<b>odd</b>", clock, Fake(jitter_ms=0.2, past_key_ms=21.0), runs=3, seed=20)
    doc = diff.diff_paths(odd, str(tmp_path / "many"))
    c = doc["comparisons"][0]
    assert (c["a"]["n"], c["b"]["n"]) == (3, 3) and io_row(c, "past_key d2h")["flag"]
    html = diff.render_html(doc)
    assert "<b>odd</b>" not in html and "&lt;b&gt;odd&lt;/b&gt;" in html


@pytest.mark.parametrize("case,needle", [
    ("missing", "does not exist"),
    ("no_trace", "has ttft.json but no trace.pftrace"),
    ("bad_json", "not valid JSON"),
    ("bad_trace", "other/trace.pftrace is truncated"),
    ("bench_vs_run", "is a bench output (bench.json) but"),
    ("bad_bench", "not a bench.json"),
    ("empty_dir", "holds neither ttft.json"),
    ("one_side", "give two directories A B, or one with --passes P Q"),
    ("bad_pass", "pass 'draft' is not one of speculative, spec, host_scoring, base_pruned, baseline"),
    ("variants_on_runs", "--variants names variants of bench outputs"),
    ("bad_alpha", "--alpha must be in (0, 1), got 2.0"),
    ("no_window", "has no ttft.baseline window"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, clock, capsys, case, needle):
    good = make_run(tmp_path / "good", clock)
    other = tmp_path / "other"
    other.mkdir()
    argv = ["diff", good, str(other)]
    if case == "missing":
        argv = ["diff", good, str(tmp_path / "nope")]
    elif case == "no_trace":
        (other / "ttft.json").write_text((tmp_path / "good" / "ttft.json").read_text())
    elif case == "bad_json":
        (other / "ttft.json").write_text('{"schema": "spectrace.ttft/1", ')
        (other / "trace.pftrace").write_bytes((tmp_path / "good" / "trace.pftrace").read_bytes())
    elif case == "bad_trace":
        (other / "ttft.json").write_text((tmp_path / "good" / "ttft.json").read_text())
        (other / "trace.pftrace").write_bytes(b"\x0a\xff\xff\xff garbage")
    elif case in ("bench_vs_run", "bad_bench"):
        res = bench_compare({"baseline": [{"total": 1.0}, {"total": 1.1}]})
        (other / "bench.json").write_text(json.dumps(to_json(res)) if case == "bench_vs_run" else '{"variants": 3}')
        argv = ["diff", str(other), good] if case == "bench_vs_run" else ["diff", str(other), str(other)]
    elif case == "one_side":
        argv = ["diff", good]
    elif case == "bad_pass":
        argv = ["diff", good, "--passes", "draft", "baseline"]
    elif case == "variants_on_runs":
        argv = ["diff", good, good, "--variants", "x"]
    elif case == "bad_alpha":
        argv = ["diff", good, good, "--alpha", "2"]
    elif case == "no_window":
        previous = tracer.configure(enabled=True)
        with tracer.capture() as rec, tracer.window("ttft.spec_device"):
            clock.advance(1.0)
        tracer.configure(**previous)
        write_pftrace(other / "trace.pftrace", rec.spans)
        (other / "ttft.json").write_text((tmp_path / "good" / "ttft.json").read_text())
        argv = ["diff", str(other), "--passes", "spec", "baseline"]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("spectrace diff: ") and needle in lines[0], lines[0]


def test_run_summary_never_raises():
    assert diff.run_summary({"ttft_baseline_s": None}) == "speculative vs baseline: no baseline was measured"
    assert diff.run_summary({"ttft_baseline_s": 1.0}).startswith("speculative vs baseline: not explained (")


# ---------------------------------------------------------------- end to end: seed 000's question
def _spectrace(*args):
    return subprocess.run([sys.executable, "-m", "spectrace.tracer.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_host_against_device_scoring_names_the_host_copies(tmp_path):
    for name, scoring in (("host", "host"), ("device", "device")):
        r = _spectrace("run", "--prompt-len", "300", "--quiet", "--scoring", scoring, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr[-2000:]
    r = _spectrace("diff", str(tmp_path / "host"), str(tmp_path / "device"), "--json", str(tmp_path / "d.json"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    c = json.loads((tmp_path / "d.json").read_text())["comparisons"][0]
    io = {x["name"]: x for x in c["io"]}
    for cat in ("past_key d2h", "prefill_queries d2h"):
        assert io[cat]["only"] == "a" and io[cat]["a"]["bytes"] > 0 and io[cat]["b"]["bytes"] == 0
        assert any(f"{cat}:" in s and s.endswith("only in A") for s in c["explanation"]), c["explanation"]
    assert "setup differs: scoring is 'host' in A, 'device' in B" in c["mismatches"]
    explanation = r.stdout.split("Explanation\n", 1)[1].split("\n\n", 1)[0]
    assert "past_key d2h" in explanation and "prefill_queries d2h" in explanation
